#!/usr/bin/env bash
# On a GPU machine, with bin/gpu-tests.tar.xz from scripts/pack_gpu_tests.sh: runs the GPU test suites (the
# DistFlashAttnCUDATests module: CUDA backend, cuBLAS matmul, training kernels, NCCL collectives, watchdog) with
# the packed Swift runtime. Extra arguments go to the runner. Exits non-zero if any test fails.
set -eu
here=$(mktemp -d)
trap 'rm -rf "$here"' EXIT
tar -C "$here" -xJf bin/gpu-tests.tar.xz 2>/dev/null \
    || python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" bin/gpu-tests.tar.xz "$here"
filter='DistFlashAttnCUDATests'  # the module of every GPU suite
LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$here/DistFlashAttnPackageTests.xctest" \
    --testing-library swift-testing --filter "$filter" "$@"
