#!/usr/bin/env bash
# The README's table of the weights users already have (issue #23): the synthetic 14B +
# UMT5-XXL + lynx_full with its DiT in bf16 (the folder's shards), fp8, GGUF Q8_0 and
# GGUF Q4_K_M; 1 frame of 64×64, 2 steps, --dtype bf16; each without offloading (on a
# 24 GB machine refused within a second, with the plan's figure) and with --offload
# blocks (and, for Q4_K_M, --offload model) — the result, the plan's estimate, the peak
# resident memory and the wall time, as markdown rows in DIR/table.md.
#
#   benches/formats14b.sh DIR
#
# Not run by CI: one set at a time is written under DIR (49 GB for bf16, 30–36 GB for the
# others) and deleted after its runs (KEEP=1 keeps them); about 75 min on 2 cores.
# Needs GNU time (/usr/bin/time -v). LYNX=path uses that binary instead of building one.
set -euo pipefail
dir=${1:?usage: benches/formats14b.sh DIR}
cd "$(dirname "$0")/.."
if [ -z "${LYNX:-}" ]; then
  cargo build --release -p lynx-cli
  LYNX=target/release/lynx
fi
unset RUST_BACKTRACE
mkdir -p "$dir"
table=$dir/table.md
{
  echo "| DiT file | \`--offload\` | result | the plan's estimate | peak RSS | wall |"
  echo "|---|---|---|---|---|---|"
} > "$table"

gb() { awk -v k="$1" 'BEGIN { printf "%.2f GB", k / 1e6 }'; }

# One row of the table from a run's log: $1 DiT label, $2 offload, $3 log.
row() {
  local label=$1 offload=$2 log=$3 result estimate rss wall
  rss=$(gb "$(grep -oP 'Maximum resident set size \(kbytes\): \K[0-9]+' "$log")")
  wall=$(grep -oP 'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): \K\S+' "$log")
  if grep -q "needs about" "$log"; then
    result="refused before reading a weight: $(grep -oP 'but \K[0-9.]+ GB(?= is available)' "$log") available"
    estimate=$(grep -oP 'needs about \K[0-9.]+ GB' "$log")
    local fits
    fits=$(grep -oP 'it fits with \K.*' "$log" || true)
    [ -n "$fits" ] && estimate="$estimate (fits: $fits)"
  elif grep -q "^load " "$log"; then
    result="2 steps: $(grep -oP '^load .*' "$log" | sed -E 's/ · peak memory.*//; s/ \([0-9.]+ s\/step\)//')"
    estimate=$(grep -oP 'peak with the process itself: about \K[0-9.]+ GB' "$log")
  else
    result="failed: $(grep -m1 -oP '^Error: \K.*' "$log" || echo 'see the log')"
    estimate="—"
  fi
  echo "| $label | $offload | $result | $estimate | $rss | $wall |" >> "$table"
}

for enc in bf16 fp8 q8_0 q4_k_m; do
  set_dir=$dir/$enc
  if [ "$enc" = bf16 ]; then
    "$LYNX" synth-model --preset 14b --dtype bf16 --output "$set_dir"
    transformer=()
    label="bf16 (the folder's shards)"
  else
    "$LYNX" synth-model --preset 14b --dtype bf16 --encoding "$enc" --output "$set_dir"
    file=$(ls "$set_dir"/wan2.1_t2v_14B*)
    transformer=(--transformer "$file")
    label="$(basename "$file"), $(du -B1 --apparent-size "$file" | awk '{ printf "%.1f GB", $1 / 1e9 }')"
  fi
  offloads=(none blocks)
  [ "$enc" = q4_k_m ] && offloads+=(model)
  for offload in "${offloads[@]}"; do
    log=$dir/$enc-$offload.log
    echo "=== $enc --offload $offload"
    /usr/bin/time -v "$LYNX" generate --model "$set_dir/Wan2.1-T2V-14B-Diffusers" \
      "${transformer[@]}" --adapters "$set_dir/lynx_full" \
      --face-embedding "$set_dir/subject/face_embedding.safetensors" \
      --aligned-face "$set_dir/subject/aligned_face.png" \
      --frames 1 --height 64 --width 64 --steps 2 --dtype bf16 --offload "$offload" \
      --output "$dir/$enc-$offload.mp4" > "$log" 2>&1 || true
    row "$label" "$offload" "$log"
    tail -1 "$table"
  done
  [ -n "${KEEP:-}" ] || rm -rf "$set_dir"
done
cat "$table"
