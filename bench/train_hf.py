#!/usr/bin/env python3
"""The training baseline for `distflash train` on one GPU: the same LLaMA shape trained with Hugging Face
transformers + PyTorch (SDPA attention), with its gradient checkpointing off and on. Random tokens, AdamW, bf16
autocast over fp32 master weights (as `distflash train` on GPUs). Reports tokens/s (median step after warm-up),
MFU and peak memory, one Markdown row per case.

    python3 bench/train_hf.py [--preset llama-1b] [--seqs 16384,32768] [--steps 6] [--checkpointing both]

MFU counts 6·N·T for the dense layers plus 12·L·S·E per token for causal attention (halved for the mask)
against the card's dense bf16 peak (989 TFLOP/s for an H100 SXM; pass --peak-tflops otherwise).
"""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# The shapes of Sources/DistFlashTrain/Model/ModelConfig.swift (tiny/small take the task's vocabulary; 256 here).
PRESETS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, vocab_size=256, rope_theta=10_000.0),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=768, vocab_size=256, rope_theta=10_000.0),
    "llama-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                       intermediate_size=2048, vocab_size=32_000, rope_theta=10_000.0),
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=32_000, rope_theta=500_000.0),
}


def model_for(preset, seq, device):
    shape = PRESETS[preset]
    config = LlamaConfig(**shape, max_position_embeddings=seq, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device), config


def step_flops(config, params, seq):
    dense = 6 * params * seq
    attention = 12 * config.num_hidden_layers * seq * seq * config.hidden_size / 2  # causal: half the pairs
    return dense + attention


def run(preset, seq, checkpointing, steps, device, peak):
    model, config = model_for(preset, seq, device)
    if checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device == "cuda")
    tokens = torch.randint(0, config.vocab_size, (1, seq), device=device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[2:] if len(times) > 3 else times)
    peak_bytes = torch.cuda.max_memory_allocated() if cuda else 0
    result = dict(preset=preset, seq=seq, checkpointing=checkpointing, params=params, step_s=step,
                  tokens_per_s=seq / step, mfu=step_flops(config, params, seq) / step / (peak * 1e12),
                  peak_gib=peak_bytes / 2**30, loss=float(loss.detach()))
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llama-1b", choices=sorted(PRESETS))
    parser.add_argument("--seqs", default="16384,32768")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--vocab", type=int, help="vocabulary size (default the preset's; 256 matches a byte-level "
                        "`distflash train --task text=FILE` run)")
    parser.add_argument("--checkpointing", default="both", choices=["off", "on", "both"],
                        help="gradient checkpointing off, on, or each in turn (default both)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.vocab:
        PRESETS[args.preset]["vocab_size"] = args.vocab
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    if not args.json:
        print(f"{name} torch {torch.__version__}, HF LlamaForCausalLM (SDPA), bf16 autocast, AdamW, B = 1")
        print("| preset | S | gradient checkpointing | step s | tokens/s | MFU | peak GiB |")
        print("|---|---:|---|---:|---:|---:|---:|")
    for seq in map(int, args.seqs.split(",")):
        for checkpointing in {"off": (False,), "on": (True,), "both": (False, True)}[args.checkpointing]:
            try:
                r = run(args.preset, seq, checkpointing, args.steps, args.device, args.peak_tflops)
            except torch.OutOfMemoryError:
                print(f"| {args.preset} | {seq} | {'on' if checkpointing else 'off'} | out of memory | | | |")
                torch.cuda.empty_cache()
                continue
            if args.json:
                print(json.dumps(r))
            else:
                print(f"| {r['preset']} | {seq} | {'on' if checkpointing else 'off'} | {r['step_s']:.3f} | "
                      f"{r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f} % | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
