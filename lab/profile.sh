#!/usr/bin/env bash
# Nsight Compute on the forward or backward candidates (one launch each, S = 16384 causal; the forward at D = 128,
# the backward's 8-warp kernels at D = 64 and 128): where the warps stall, how busy the tensor pipes and shared
# memory are. Usage: lab/profile.sh forward|backward [--only=… --skip=…]; report in $OUT/<name>-ncu.txt.
set -euo pipefail
cd "$(dirname "$0")"
name=${1:-forward}
shift || true
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sed -n 1p | tr -dc 0-9)
[ "$arch" = 90 ] && arch=90a
build=${TMPDIR:-/tmp}/distflash-lab
mkdir -p "$build"
nvcc -O3 -std=c++17 -lineinfo -gencode "arch=compute_$arch,code=sm_$arch" -o "$build/$name" "harness/${name}_harness.cu" -lcuda
# The harness launches each case twice (a warm-up, then the timed launch); both are profiled.
ncu --kernel-name regex:"${name}_(mma|wgmma)|lab_${name}" --launch-count 24 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    "$build/$name" --profile "$@" | tee "${OUT:-$build}/$name-ncu.txt"
