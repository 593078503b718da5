#!/usr/bin/env bash
# On a machine with GPUs and the static binary at bin/distflash. Logs under $OUT.
#   check  the tiny model's first steps on 1 GPU, on every GPU from one process, and on every GPU as one process
#          each (torchrun): the three loss trajectories side by side (same seed, same data)
#   track  llama-1b on the recall task (S = 8192, 30 steps): one GPU against every GPU, same seed and data; the
#          two loss trajectories side by side and their SVG curves
#   bench  the GPU trainer's step time, tokens/s, MFU and peak memory for --checkpoint none / layer / remat and
#          remat with --offload at 16k and 32k tokens per GPU (TOKENS, STRATEGIES override, e.g. remat+offload+lean
#          for --lean-weights; SINGLE=0, MULTI=0, BASELINE=0 skip parts; llama-1b, byte-level text of random
#          bytes): on one GPU, beside the Hugging Face + PyTorch baseline with the same shape and vocabulary on
#          another, then on every GPU (the distflash plan)
#   profile  one GPU, llama-1b, S = 32768 (TOKENS), remat (STRATEGIES, one), 3 steps with --kernel-times: the last
#          step's device time by phase (attention, GEMMs, optimizer, each small kernel), the largest gaps between
#          phases, and what none of them covers
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
gpus=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee "$out/gpu.txt"
mode=${1:-bench}
# The flags of a strategy: none, layer, remat; +offload: the checkpoint in host memory; +lean: --lean-weights.
checkpoint() {
    local flags="--checkpoint ${1%%+*}"
    case "$1" in *+offload*) flags="$flags --offload" ;; esac
    case "$1" in *+lean*) flags="$flags --lean-weights" ;; esac
    echo "$flags"
}
if [ "$mode" = check ]; then
    tiny="train --preset tiny --task recall --seq 1024 --batch 4 --steps 8 --warmup 2 --seq-warmup 48:4:8 --eval-every 0 --seed 7 --json"
    timeout 200 bin/distflash $tiny --gpus 1 >"$out/check-1gpu.jsonl" 2>"$out/check-1gpu.err"
    echo "1 GPU: exit $?"
    timeout 200 bin/distflash $tiny --gpus "$gpus" >"$out/check-${gpus}gpu.jsonl" 2>"$out/check-${gpus}gpu.err"
    echo "$gpus GPUs, one process: exit $?"
    timeout 200 torchrun --nproc-per-node "$gpus" --master-port 29710 --no-python bin/distflash $tiny --gpus 1 \
        >"$out/check-torchrun.jsonl" 2>"$out/check-torchrun.err"
    echo "$gpus processes (torchrun): exit $?"
    for f in 1gpu "${gpus}gpu" torchrun; do
        echo "$f: $(grep -o '"loss":[0-9.]*' "$out/check-$f.jsonl" | cut -d: -f2 | tr '\n' ' ') $(tail -c 300 "$out/check-$f.err")"
    done
    exit 0
fi
if [ "$mode" = track ]; then
    job="train --preset llama-1b --task recall --seq 8192 --batch 1 --steps 30 --lr 3e-4 --warmup 5 --seq-warmup none --eval-every 10 --eval-batches 1 --seed 11 --json"
    for count in 1 "$gpus"; do
        timeout 240 bin/distflash $job --gpus "$count" --curve "$out/track-x$count.svg" >"$out/track-x$count.jsonl" \
            2>"$out/track-x$count.err"
        echo "$count GPU(s): exit $? $(grep -o '"loss":[0-9.]*' "$out/track-x$count.jsonl" | cut -d: -f2 | cut -c1-6 | tr '\n' ' ')"
    done
    exit 0
fi
head -c 64000000 /dev/urandom >"$out/random.bytes"
if [ "$mode" = profile ]; then
    timeout "${LIMIT:-240}" bin/distflash train --gpus 1 --preset llama-1b --task "text=$out/random.bytes" \
        --seq "${TOKENS:-32768}" --batch 1 --steps 3 --warmup 1 --seq-warmup none --eval-every 0 --eval-batches 1 \
        $(checkpoint "${STRATEGIES:-remat}") --kernel-times --json >"$out/train-profile.jsonl" 2>"$out/train-profile.err"
    echo "profile: exit $? $(tail -c 300 "$out/train-profile.err")"
    grep '"event":"step"' "$out/train-profile.jsonl" | tail -1 | python3 -c '
import json, sys
step = json.loads(sys.stdin.read())
times, total = step["phase_ms"], step["step_ms"]
phases = {name: ms for name, ms in times.items() if not name.startswith("gap:")}
gaps = {name[4:]: ms for name, ms in times.items() if name.startswith("gap:")}
busy, between = sum(phases.values()), sum(gaps.values())
print("step %.1f ms; phases %.1f ms; between phases %.1f ms; before the first and after the last %.1f ms"
      % (total, busy, between, total - busy - between))
for name, ms in sorted(phases.items(), key=lambda item: -item[1]):
    print("%9.2f ms  %s" % (ms, name))
print("largest gaps between phases:")
for name, ms in sorted(gaps.items(), key=lambda item: -item[1])[:15]:
    print("%9.2f ms  %s" % (ms, name))' | tee "$out/train-profile.txt"
    exit 0
fi
# One run: run TAG GPUS SEQ STRATEGY (none, layer, remat; +offload: the checkpoint in host memory). The step lines
# (JSON) go to $out/train-TAG.jsonl; the last one is echoed.
run() {
    local tag=$1 count=$2 seq=$3 strategy=$4
    timeout "${LIMIT:-240}" bin/distflash train --gpus "$count" --preset llama-1b --task "text=$out/random.bytes" \
        --seq "$seq" --batch 1 --steps "${STEPS:-4}" --warmup 1 --seq-warmup none --eval-every 0 --eval-batches 1 \
        $(checkpoint "$strategy") --plan distflash --json >"$out/train-$tag.jsonl" 2>"$out/train-$tag.err"
    echo "$tag: exit $? $(grep '"event":"step"' "$out/train-$tag.jsonl" | tail -1) $(tail -c 300 "$out/train-$tag.err")"
}
# The same shape with Hugging Face transformers + PyTorch on one GPU (gradient checkpointing off and on).
baseline() {
    timeout "${LIMIT:-300}" python3 bench/train_hf.py --preset llama-1b --vocab 256 \
        --seqs "$(echo ${TOKENS:-16384 32768} | tr ' ' ,)" --steps "${HF_STEPS:-6}" >"$out/train-hf.md" 2>"$out/train-hf.err"
    echo "Hugging Face: exit $?"; cat "$out/train-hf.md"
}
# runs WHERE: every strategy at every TOKENS on one GPU (WHERE = single) or on all of them (WHERE = multi).
runs() {
    for tokens in ${TOKENS:-16384 32768}; do
        for strategy in ${STRATEGIES:-none layer remat remat+offload}; do
            if [ "$1" = single ]; then run "$strategy-$tokens-x1" 1 "$tokens" "$strategy"  # the baseline's shape
            else run "$strategy-$tokens-x$gpus" "$gpus" $((tokens * gpus)) "$strategy"; fi   # S = tokens · P
        done
    done
}
# First the one-GPU runs on GPU 0 with the baseline beside them on the last GPU (cards of their own), then the
# runs on every GPU.
[ "${BASELINE:-1}" = 1 ] && [ "$gpus" -ge 2 ] && { CUDA_VISIBLE_DEVICES=$((gpus - 1)) baseline >"$out/baseline.txt" & }
[ "${SINGLE:-1}" = 1 ] && CUDA_VISIBLE_DEVICES=0 runs single
wait
[ -f "$out/baseline.txt" ] && cat "$out/baseline.txt"
[ "${BASELINE:-1}" = 1 ] && [ "$gpus" -lt 2 ] && baseline
[ "${MULTI:-1}" = 1 ] && [ "$gpus" -ge 2 ] && runs multi
exit 0
