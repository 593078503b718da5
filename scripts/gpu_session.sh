#!/usr/bin/env bash
# One GPU-machine pass: the kernel-lab parts named as arguments (scripts/gpu_lab_session.sh parts, e.g.
# forward backward), the GPU test suites and the full check grid, then the kernels' benchmark beside
# PyTorch SDPA (same run, same card) at D = 128 (the issue's shapes) and at D = 64 (llama-1b's head dimension).
# With two GPUs the tests and the check grid run on the second while the lab and the benchmarks run on the
# first; with four, the lab, the two benchmarks and the checks each have a card. Logs under $OUT.
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$out/commit.txt"
checks() {
    bash scripts/gpu_tests.sh >"$out/tests.log" 2>&1; echo "gpu_tests exit $?"; tail -1 "$out/tests.log"
    OUT=$out bash scripts/gpu_check.sh >"$out/check.log" 2>&1; echo "gpu_check exit $?"; tail -3 "$out/check.log"
}
bench128() {
    bin/distflash bench cuda --repeats 10 | tee "$out/bench-distflash.md"
    python3 bench/gpu_sdpa.py | tee "$out/bench-sdpa.md"
}
bench64() {
    short=8192,16384,32768
    bin/distflash bench cuda --head-dim 64 --seqs $short --repeats 5 | tee "$out/bench-distflash-d64.md"
    python3 bench/gpu_sdpa.py --head-dim 64 --seqs $short | tee "$out/bench-sdpa-d64.md"
}
lab() { [ $# = 0 ] || OUT=$out/lab bash scripts/gpu_lab_session.sh "$(IFS=,; echo "$*")"; }
gpus=$(nvidia-smi --list-gpus | wc -l)
if [ "$gpus" -ge 4 ]; then  # every part on a card of its own
    CUDA_VISIBLE_DEVICES=3 checks >"$out/checks.txt" 2>&1 &
    CUDA_VISIBLE_DEVICES=2 bench64 >"$out/bench64.txt" 2>&1 &
    CUDA_VISIBLE_DEVICES=1 bench128 >"$out/bench128.txt" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 lab "$@"
    wait
    cat "$out/bench128.txt" "$out/bench64.txt" "$out/checks.txt"
elif [ "$gpus" -ge 2 ]; then
    CUDA_VISIBLE_DEVICES=1 checks >"$out/checks.txt" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 lab "$@"
    CUDA_VISIBLE_DEVICES=0 bench128
    CUDA_VISIBLE_DEVICES=0 bench64
    wait
    cat "$out/checks.txt"
else
    checks
    lab "$@"
    bench128
    bench64
fi
