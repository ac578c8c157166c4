#!/usr/bin/env bash
# The "Scale" workload of BENCH.md: a synthetic model at the real size, one frame of
# 64×64, 2 steps, Lynx full, bf16 — wall time and peak resident memory, with and without
# offloading. Not run by CI (it writes 15–50 GB); see the README, "Running the 14B model".
#
#   benches/scale.sh 14b  DIR   # 49.8 GB on disk: --offload blocks, then the check without
#   benches/scale.sh 1.3b DIR   # 15.5 GB on disk: --offload blocks, then --offload none
#   LAYERS=2 benches/scale.sh 14b DIR   # the 14B widths with 2 blocks and 2 text layers (6 GB)
#
# DIR must have room for the model; it is deleted afterwards (KEEP=1 keeps it). Needs
# GNU time (/usr/bin/time -v).
set -euo pipefail
preset=${1:?usage: benches/scale.sh 14b|1.3b DIR}
dir=${2:?usage: benches/scale.sh 14b|1.3b DIR}
cd "$(dirname "$0")/.."
cargo build --release -p lynx-cli
lynx=target/release/lynx
case $preset in
  14b) model=$dir/Wan2.1-T2V-14B-Diffusers ;;
  1.3b) model=$dir/Wan2.1-T2V-1.3B-Diffusers ;;
  *) echo "preset must be 14b or 1.3b" >&2; exit 2 ;;
esac
"$lynx" synth-model --preset "$preset" --dtype bf16 --output "$dir" ${LAYERS:+--layers "$LAYERS"}
run() {
  # $1: offload; the rest: extra flags
  local offload=$1; shift
  echo "=== --offload $offload $*"
  /usr/bin/time -v "$lynx" generate --model "$model" --adapters "$dir/lynx_full" \
    --face-embedding "$dir/subject/face_embedding.safetensors" \
    --aligned-face "$dir/subject/aligned_face.png" \
    --frames 1 --height 64 --width 64 --steps 2 --dtype bf16 --offload "$offload" "$@" \
    --output "$dir/out-$offload.safetensors" 2> >(tee "$dir/log-$offload.txt" >&2) || true
  grep -E "Elapsed \(wall|Maximum resident|peak resident|needs about" "$dir/log-$offload.txt" || true
}
run blocks
# On a 24 GB machine the full 14B stops here within seconds with the estimate in GB;
# the 1.3B (15.5 GB in bf16) runs.
run none
if [ -z "${KEEP:-}" ]; then
  rm -rf "$model" "$dir/lynx_full" "$dir/lynx_lite" "$dir/subject" "$dir"/out-*.safetensors
fi
