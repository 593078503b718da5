#!/usr/bin/env bash
# One GPU-machine pass: the lab harnesses named as arguments (forward, backward), the full check grid, then the
# kernels' benchmark beside PyTorch SDPA (same call, same card) at D = 128 (the issue's shapes) and at D = 64
# (llama-1b's head dimension). Logs under $OUT.
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$out/commit.txt"
for harness in "$@"; do OUT=$out lab/run.sh "$harness" >/dev/null 2>"$out/$harness-lab.err" || echo "lab $harness failed"; done
OUT=$out bash scripts/gpu_check.sh >"$out/check.log" 2>&1; echo "gpu_check exit $?"; tail -3 "$out/check.log"
bin/distflash bench cuda --repeats 10 | tee "$out/bench-distflash.md"
python3 bench/gpu_sdpa.py | tee "$out/bench-sdpa.md"
short=8192,16384,32768
bin/distflash bench cuda --head-dim 64 --seqs $short --repeats 5 | tee "$out/bench-distflash-d64.md"
python3 bench/gpu_sdpa.py --head-dim 64 --seqs $short | tee "$out/bench-sdpa-d64.md"
