#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on one GPU, flash and cuDNN backends: the baseline for
`distflash bench cuda`. bf16, B=1, H=32, D=128 (or --heads, --head-dim: D = 64 is llama-1b's), causal and full,
S ∈ {4096 … 65536}; CUDA-event timing, median of 10 after warm-up; FLOPs 4·B·S²·H·D (halved for causal),
backward 2.5×, forward+backward 3.5×.

    python3 bench/gpu_sdpa.py [--seqs 4096,8192,16384,32768,65536] [--heads 32] [--head-dim 128]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(fn, repeats=10):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seqs", default="4096,8192,16384,32768,65536")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args()
    b, h, d = 1, args.heads, args.head_dim
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} cuDNN {torch.backends.cudnn.version()}, "
          f"B={b} H={h} D={d} bf16")
    print("| backend | mask | S | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for backend, name in [(SDPBackend.FLASH_ATTENTION, "flash"), (SDPBackend.CUDNN_ATTENTION, "cudnn")]:
        for causal in (True, False):
            for s in map(int, args.seqs.split(",")):
                q, k, v, grad = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
                qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
                flops = 4 * b * s * s * h * d / (2 if causal else 1)
                with sdpa_kernel(backend):
                    def forward():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                    def forward_backward():
                        F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal).backward(grad)

                    try:
                        f, fb = timed(forward), timed(forward_backward)
                    except RuntimeError as error:
                        print(f"| {name} | {'causal' if causal else 'full'} | {s} | n/a: {str(error)[:60]} | | | |")
                        continue
                print(f"| {name} | {'causal' if causal else 'full'} | {s} | {f * 1e3:.2f} | {flops / f / 1e12:.1f} | "
                      f"{fb * 1e3:.2f} | {3.5 * flops / fb / 1e12:.1f} |")


if __name__ == "__main__":
    main()
