#!/usr/bin/env bash
# One GPU-machine pass, in order of value: the backward lab harness, the kernels' benchmark beside PyTorch SDPA
# (same call, same card), then the full GPU check grid. Logs under $OUT.
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$out/commit.txt"
for harness in "$@"; do OUT=$out lab/run.sh "$harness" >/dev/null 2>"$out/$harness-lab.err" || echo "lab $harness failed"; done
bin/distflash bench cuda --repeats 10 | tee "$out/bench-distflash.md"
python3 bench/gpu_sdpa.py | tee "$out/bench-sdpa.md"
OUT=$out bash scripts/gpu_check.sh >"$out/check.log" 2>&1; echo "gpu_check exit $?"; tail -3 "$out/check.log"
