#!/usr/bin/env bash
# On a GPU machine, with the static binary at bin/distflash (or $DISTFLASH_BIN): the CUDA backend against the
# float64 reference over the foundation grid for D ∈ {64, 128}, distributed plans on the GPU, and PyTorch SDPA
# on the same .npy inputs. Writes logs under $OUT (default /tmp/distflash-gpu); exits non-zero on any failure.
set -u
bin=${DISTFLASH_BIN:-bin/distflash}
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
failures=0
run() {
    if ! "$bin" attention --backend cuda "$@" --backward --check --json >>"$out/check.jsonl" 2>>"$out/check.err"; then
        echo "FAIL: $*" | tee -a "$out/failures.txt"
        failures=$((failures + 1))
    fi
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for s in 1 2 97; do
    for d in 64 128; do
        for heads in "--heads 1 --kv-heads 1" "--heads 6 --kv-heads 2" "--heads 8 --kv-heads 1"; do
            for mask in "--mask causal" "--mask full" "--mask window=20" "--doc-lens 1,$((s > 1 ? s - 1 : 0))"; do
                [ "$s" = 1 ] && [ "$mask" = "--doc-lens 1,0" ] && mask="--doc-lens 1"
                run --seq "$s" --head-dim "$d" $heads $mask --batch $((d == 64 ? 2 : 1))
            done
        done
    done
done
for mask in "--mask causal" "--mask full" "--mask window=100" "--doc-lens 1,500,524"; do
    run --seq 1025 --heads 6 --kv-heads 2 --head-dim 64 $mask
    run --seq 1025 --heads 6 --kv-heads 2 --head-dim 128 $mask
done
for plan in ring distflash zigzag striped allgather ulysses; do
    run --seq 301 --heads 6 --kv-heads 2 --head-dim 64 --workers 3 --plan "$plan"
done
# fp16 inputs (the kernels compiled for fp16): tensor-core and SIMT head dims, every mask, GQA, a plan
for d in 40 64 128; do
    for mask in "--mask causal" "--mask full" "--mask window=100" "--doc-lens 1,500,524"; do
        run --dtype fp16 --seq 1025 --heads 6 --kv-heads 2 --head-dim "$d" $mask
    done
done
run --dtype fp16 --seq 301 --heads 6 --kv-heads 2 --head-dim 64 --workers 3 --plan distflash
python3 scripts/sdpa_crosscheck.py --binary "$bin" | tee "$out/sdpa.txt" || failures=$((failures + 1))
echo "gpu checks: $(wc -l <"$out/check.jsonl") runs, $failures failures"
[ "$failures" = 0 ]
