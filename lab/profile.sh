#!/usr/bin/env bash
# Nsight Compute on the forward candidates (one launch each, S = 16384 causal, D = 128): where the warps stall,
# how busy the tensor pipes and shared memory are. Usage: lab/profile.sh; report in $OUT/forward-ncu.txt.
set -euo pipefail
cd "$(dirname "$0")"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[ "$arch" = 90 ] && arch=90a
build=${TMPDIR:-/tmp}/distflash-lab
mkdir -p "$build"
nvcc -O3 -std=c++17 -lineinfo -arch=sm_$arch -o "$build/forward" harness/forward_harness.cu
ncu --kernel-name regex:'forward_mma' --launch-skip 1 --launch-count 3 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    "$build/forward" --profile | tee "${OUT:-$build}/forward-ncu.txt"
