#!/usr/bin/env bash
# One pass on a machine with ≥ 2 GPUs, with the static binary at bin/distflash. Logs under $OUT.
#   check  the multi-GPU checks (both process models, induced failures: scripts/gpu_multi_check.sh)
#   single the single-GPU check grid (scripts/gpu_check.sh)
#   bench  every plan over the GPUs (`distflash bench gpus`) beside PyTorch context parallel, same call, same cards;
#          extra arguments go to both (e.g. --seqs 32768,65536 --kv-heads 8)
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
mode=$1; shift
gpus=$(nvidia-smi --list-gpus | wc -l)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$out/commit.txt"
case "$mode" in
check)
    OUT=$out timeout 560 bash scripts/gpu_multi_check.sh >"$out/multi-check.log" 2>&1
    echo "gpu_multi_check exit $?"; grep -E "FAIL|induced|checks:" "$out/multi-check.log" | head -40 ;;
single)
    OUT=$out/single timeout 400 bash scripts/gpu_check.sh >"$out/single-check.log" 2>&1
    echo "gpu_check exit $?"; tail -3 "$out/single-check.log" ;;
bench)
    tag=$(echo "$*" | tr -c 'a-z0-9' '_')
    timeout 420 bin/distflash bench gpus --gpus "$gpus" "$@" | tee "$out/bench-gpus$tag.md"
    timeout 240 torchrun --nproc-per-node "$gpus" bench/torch_context_parallel.py "$@" \
        | tee "$out/bench-torch-cp$tag.md" ;;
*) echo "usage: $0 check|single|bench [args]"; exit 2 ;;
esac
