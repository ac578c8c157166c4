#!/usr/bin/env bash
# The offline recipe for building lynx-rs with `--features cuda`.
#
# burn-cuda 0.22 pulls cubecl-cuda 0.11, which always links cubecl-llvm; its build script
# (through the `tracel-llvm-bundler` crate) downloads tracel's prebuilt LLVM 23 bundle from
# GitHub into `dirs::data_local_dir()/tracel/tracel-llvm-<version>/`, unless that folder
# already holds the file `.tracel-llvm-installed`. It then reads everything it links from
# that folder's `bin/llvm-config`. This script makes such a folder, inside the clone
# (`target/cuda-llvm/`, or under $CARGO_TARGET_DIR), standing in for the bundle with
# Debian's LLVM 22, and prints the folder to give as XDG_DATA_HOME (which is where
# `dirs::data_local_dir()` looks first on Linux):
#
#   XDG_DATA_HOME="$(.ci/cuda-llvm.sh)" cargo build --release -p lynx-cli --features cuda
#
# Nothing is written outside the clone but what apt-get installs (as root, or with sudo):
# llvm-22-dev (static LLVM libraries, llvm-config), libpolly-22-dev (llvm-config's static
# library list names Polly), libzstd-dev and libz3-dev (its system libraries). Idempotent:
# a second run installs nothing and leaves the folder as it was.
#
# The stand-in's `bin/llvm-config` is a wrapper around Debian's. Debian's lists Z3 as a
# path (`/usr/lib/x86_64-linux-gnu/libz3.so`) among `--system-libs`, which the bundler
# turns into `-llibz3`; the wrapper prints such paths as `-lz3`. The LLVM versions differ
# (22 for 23): cubecl's NVPTX code generation builds and links against 22; kernels it
# compiles with it have not been run on a GPU here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
llvm_major=22
packages=(llvm-$llvm_major-dev libpolly-$llvm_major-dev libzstd-dev libz3-dev)

if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "installing ${packages[*]}" >&2
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >&2
fi
real=/usr/lib/llvm-$llvm_major/bin/llvm-config
[ -x "$real" ] || { echo "cuda-llvm.sh: $real is missing after installing ${packages[*]}" >&2; exit 1; }

# The bundle's folder name follows the bundler's version in Cargo.lock (`23.1.0-4`).
bundler=$(awk '/^name = "tracel-llvm-bundler"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
  "$repo/Cargo.lock")
[ -n "$bundler" ] || { echo "cuda-llvm.sh: no tracel-llvm-bundler in $repo/Cargo.lock" >&2; exit 1; }

data="${CARGO_TARGET_DIR:-$repo/target}/cuda-llvm"
case "$data" in /*) ;; *) data="$repo/$data" ;; esac # XDG_DATA_HOME must be absolute
bundle="$data/tracel/tracel-llvm-$bundler"
mkdir -p "$bundle/bin"
cat >"$bundle/bin/llvm-config.new" <<EOF
#!/bin/sh
# Stand-in for tracel's LLVM bundle (made by .ci/cuda-llvm.sh): Debian's LLVM $llvm_major,
# with library paths printed as -l flags.
set -f
out=\$("$real" "\$@") || exit \$?
for word in \$out; do
  case \$word in
    /*/lib*.so) name=\${word##*/lib}; word=-l\${name%.so} ;;
  esac
  printf '%s ' "\$word"
done
echo
EOF
chmod +x "$bundle/bin/llvm-config.new"
if cmp -s "$bundle/bin/llvm-config.new" "$bundle/bin/llvm-config"; then
  rm "$bundle/bin/llvm-config.new"
else
  mv "$bundle/bin/llvm-config.new" "$bundle/bin/llvm-config"
fi
# The bundler skips its download when this file exists; written once, so that its
# modification time (which the bundler's build script watches) stays put.
[ -e "$bundle/.tracel-llvm-installed" ] || : >"$bundle/.tracel-llvm-installed"
echo "$data"
