#!/usr/bin/env bash
# Builds a lab harness with nvcc for the card in this machine and runs it (correctness, then timings).
# Usage: lab/run.sh forward|backward|wgmma [harness arguments]; the log also goes to $OUT/<name>[-$LAB_TAG]-lab.txt
# when OUT is set.
set -euo pipefail
cd "$(dirname "$0")"
name=$1
shift
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sed -n 1p | tr -dc 0-9)
[ "$arch" = 90 ] && arch=90a  # Hopper's wgmma and setmaxnreg exist only in the arch-specific target
build=${TMPDIR:-/tmp}/distflash-lab
mkdir -p "$build"
# Build unless the binary is newer than every lab and kernel source (a second run of the same harness with other
# arguments reuses it).
if [ ! -x "$build/$name" ] || [ -n "$(find . ../Sources/DistFlashAttnCUDA/kernels -newer "$build/$name" -name '*.cu*' | head -1)" ]; then
    nvcc -O3 -std=c++17 -lineinfo -gencode "arch=compute_$arch,code=sm_$arch" -o "$build/$name" "harness/${name}_harness.cu" \
        -lcuda -Xptxas -v 2>"$build/$name-ptxas.txt" || { cat "$build/$name-ptxas.txt"; exit 1; }
fi
"$build/$name" "$@" | tee "${OUT:-$build}/$name${LAB_TAG:+-$LAB_TAG}-lab.txt"
