#!/usr/bin/env bash
# On a machine with ≥ 2 GPUs, with the static binary at bin/distflash (or $DISTFLASH_BIN): every plan on P GPUs of
# one process (NCCL between them) against the float64 reference, P ∈ {2, 3, 4} up to the GPU count, every mask,
# GQA, S not divisible by P; then a rank that fails on purpose must make the run exit non-zero, naming the rank,
# well within the timeout. Logs under $OUT (default /tmp/distflash-gpu); exits non-zero on any failure.
set -u
bin=${DISTFLASH_BIN:-bin/distflash}
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
gpus=$(nvidia-smi --list-gpus | wc -l)
failures=0
for p in 2 3 4; do
    [ "$p" -le "$gpus" ] || continue
    for plan in ring distflash zigzag striped allgather ulysses; do
        for mask in "--mask causal" "--mask full" "--mask window=50" "--doc-lens 100,201"; do
            if ! "$bin" attention --backend cuda --gpus "$p" --plan "$plan" --seq 301 --heads 6 --kv-heads 2 \
                --head-dim 64 $mask --backward --check --json >>"$out/multi.jsonl" 2>>"$out/multi.err"; then
                echo "FAIL: P=$p $plan $mask" | tee -a "$out/multi-failures.txt"
                failures=$((failures + 1))
            fi
        done
    done
done
start=$(date +%s)
if "$bin" attention --backend cuda --gpus 2 --plan distflash --seq 301 --heads 6 --head-dim 64 --fail-rank 1 \
    --fail-step 0 --timeout 20 >"$out/fail.txt" 2>&1; then
    echo "FAIL: the induced failure exited 0" | tee -a "$out/multi-failures.txt"
    failures=$((failures + 1))
elif ! grep -q "rank 1: failure injected" "$out/fail.txt"; then
    echo "FAIL: the induced failure's error does not name rank 1" | tee -a "$out/multi-failures.txt"
    failures=$((failures + 1))
fi
echo "induced failure: exited after $(( $(date +%s) - start )) s: $(head -c 300 "$out/fail.txt")"
echo "multi-GPU checks: $(wc -l <"$out/multi.jsonl" 2>/dev/null || echo 0) runs, $failures failures"
[ "$failures" = 0 ]
