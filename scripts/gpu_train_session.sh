#!/usr/bin/env bash
# On a machine with GPUs and the static binary at bin/distflash: the GPU trainer's step time, tokens/s, MFU and
# peak memory for --checkpoint none / layer / remat at 16k and 32k tokens per GPU (llama-1b, byte-level text of
# random bytes, the distflash plan over every GPU), then the Hugging Face + PyTorch baseline on one GPU with the
# same shape and vocabulary, in the same call. Logs under $OUT; one summary line per run on standard output.
set -u
out=${OUT:-/tmp/distflash-gpu}
mkdir -p "$out"
gpus=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee "$out/gpu.txt"
head -c 64000000 /dev/urandom >"$out/random.bytes"
for tokens in ${TOKENS:-16384 32768}; do
    for strategy in none layer remat; do
        tag=$strategy-$tokens
        timeout "${LIMIT:-240}" bin/distflash train --gpus "$gpus" --preset llama-1b --task "text=$out/random.bytes" \
            --seq $((tokens * gpus)) --batch 1 --steps "${STEPS:-4}" --warmup 1 --eval-every 0 --eval-batches 1 \
            --checkpoint "$strategy" --plan distflash --json >"$out/train-$tag.jsonl" 2>"$out/train-$tag.err"
        echo "$tag: exit $? $(grep '"event":"step"' "$out/train-$tag.jsonl" | tail -1) $(tail -c 300 "$out/train-$tag.err")"
    done
done
timeout "${LIMIT:-240}" python3 bench/train_hf.py --preset llama-1b --vocab 256 --seqs 16384,32768 --steps 6 \
    | tee "$out/train-hf.md"
