#!/usr/bin/env bash
# On a machine with ≥ 2 GPUs, with the static binary at bin/distflash (or $DISTFLASH_BIN):
#  1. one process: every plan on P GPUs (NCCL between them) against the float64 reference, P ∈ {2, 3, 4} up to
#     the GPU count, every mask, GQA, S not divisible by P;
#  2. one process per GPU: the same check with P processes started by torchrun (P ∈ {2, 4}) and by hand with the
#     launcher variables (P = 3);
#  3. in both process models, a rank that fails on purpose must make every rank exit non-zero, naming the rank,
#     well within the timeout.
# Logs under $OUT (default /tmp/distflash-gpu); exits non-zero on any failure.
set -u
bin=${DISTFLASH_BIN:-bin/distflash}
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
gpus=$(nvidia-smi --list-gpus | wc -l)
failures=0
fail() { echo "FAIL: $*" | tee -a "$out/multi-failures.txt"; failures=$((failures + 1)); }
# The four masks run side by side (small problems: the GPUs have room for four runs at once); one warm-up run
# first fills the kernel cache.
"$bin" attention --backend cuda --gpus 2 --seq 64 --heads 2 --head-dim 64 --backward >/dev/null 2>>"$out/multi.err"
grid() {  # grid TAG MASK-ARGS...: every P and plan for one mask; failures listed in $out/grid-TAG.failed
    local tag=$1 p plan; shift
    for p in 2 3 4; do
        [ "$p" -le "$gpus" ] || continue
        for plan in ring distflash zigzag striped allgather ulysses; do
            "$bin" attention --backend cuda --gpus "$p" --plan "$plan" --seq 301 --heads 6 --kv-heads 2 \
                --head-dim 64 "$@" --backward --check --json >>"$out/multi-$tag.jsonl" 2>>"$out/multi-$tag.err" \
                || echo "P=$p $plan $*" >>"$out/grid-$tag.failed"
        done
    done
}
grid causal --mask causal & grid full --mask full & grid window --mask window=50 & grid docs --doc-lens 100,201 &
wait
# fp16 inputs over NCCL (receive buffers and kernels of the fp16 build)
grid fp16 --dtype fp16 --mask causal
cat "$out"/multi-*.jsonl >"$out/multi.jsonl"
for f in "$out"/grid-*.failed; do [ -e "$f" ] || continue; while read -r line; do fail "$line"; done <"$f"; done

# One process per GPU, started by hand: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT as any launcher sets
# them, rendezvous at 127.0.0.1:port. Prints each rank's exit status; rank r's output goes to $out/$tag-r.txt.
by_hand() {
    local p=$1 tag=$2 port=$3; shift 3
    local pids=() r
    for r in $(seq 0 $((p - 1))); do
        RANK=$r WORLD_SIZE=$p LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            timeout 180 "$bin" "$@" >"$out/$tag-$r.txt" 2>&1 &
        pids+=($!)
    done
    local codes=()
    for pid in "${pids[@]}"; do wait "$pid"; codes+=($?); done
    echo "${codes[@]}"
}

port=29600
check_args="--backend cuda --seq 301 --heads 6 --kv-heads 2 --head-dim 64 --backward --check --json"
if command -v torchrun >/dev/null; then
    for p in 2 4; do
        [ "$p" -le "$gpus" ] || continue
        for plan in ring distflash ulysses; do
            for mask in "--mask causal" "--doc-lens 100,201"; do
                port=$((port + 1))
                if ! timeout 180 torchrun --nproc-per-node "$p" --master-port "$port" --no-python "$bin" attention \
                    $check_args --plan "$plan" $mask >>"$out/multiprocess.jsonl" 2>>"$out/multiprocess.err"; then
                    fail "torchrun P=$p $plan $mask"
                fi
            done
        done
    done
else
    fail "torchrun not found: the launcher check did not run"
fi
if [ "$gpus" -ge 3 ]; then
    for plan in zigzag striped allgather; do
        port=$((port + 1))
        codes=$(by_hand 3 "hand-$plan" "$port" attention $check_args --plan "$plan" --mask window=50)
        [ "$codes" = "0 0 0" ] || fail "by hand P=3 $plan: exit codes $codes"
        cat "$out/hand-$plan-0.txt" >>"$out/multiprocess.jsonl"
    done
fi

# The induced failure, one process: every rank stops and the run exits non-zero naming rank 1.
start=$(date +%s)
if "$bin" attention --backend cuda --gpus 2 --plan distflash --seq 301 --heads 6 --head-dim 64 --fail-rank 1 \
    --fail-step 0 --timeout 20 >"$out/fail.txt" 2>&1; then
    fail "the induced failure exited 0"
elif ! grep -q "rank 1: failure injected" "$out/fail.txt"; then
    fail "the induced failure's error does not name rank 1"
fi
echo "induced failure, one process: exited after $(( $(date +%s) - start )) s: $(head -c 300 "$out/fail.txt")"

# The induced failure, one process per GPU: rank 1 fails at step 1; every rank must exit non-zero within the
# timeout (20 s) plus start-up, rank 1 naming itself and the others naming the rank and step they waited for.
start=$(date +%s)
codes=$(by_hand 2 fail-mp $((port + 1)) attention --backend cuda --plan distflash --seq 301 --heads 6 --head-dim 64 \
    --fail-rank 1 --fail-step 1 --timeout 20)
elapsed=$(( $(date +%s) - start ))
echo "induced failure, one process per GPU: exit codes $codes after $elapsed s"
for r in 0 1; do echo "  rank $r: $(tail -c 400 "$out/fail-mp-$r.txt")"; done
case "$codes" in *0*) fail "a rank exited 0 after the induced failure (codes $codes)" ;; esac
grep -q "rank 1: failure injected" "$out/fail-mp-1.txt" || fail "rank 1 does not name its injected failure"
[ "$elapsed" -le 90 ] || fail "the induced failure took $elapsed s (timeout 20 s)"

echo "multi-GPU checks: $(cat "$out/multi.jsonl" "$out/multiprocess.jsonl" 2>/dev/null | grep -c check_passed) runs, $failures failures"
[ "$failures" = 0 ]
