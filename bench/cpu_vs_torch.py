#!/usr/bin/env python3
"""CPU attention: distflash's kernels beside PyTorch's scaled_dot_product_attention, same shapes, same machine.

Runs `distflash bench cpu --json` and then times torch SDPA (fp32) on the same B, H, D, S and mask, forward and
forward+backward, median of --repeats runs after a warm-up. Prints a Markdown table with the ratios
(time of PyTorch / time of distflash, so > 1 means distflash is faster).

    python3 bench/cpu_vs_torch.py --binary .build/release/distflash --seqs 2048,4096,8192
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_times(b, h, s, d, causal, repeats):
    q, k, v, grad = (torch.randn(b, h, s, d) for _ in range(4))

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def forward_backward():
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        out.backward(grad)
        qg.grad = kg.grad = vg.grad = None

    return median_seconds(forward, repeats), median_seconds(forward_backward, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=".build/release/distflash")
    parser.add_argument("--seqs", default="2048,4096,8192")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--mask", choices=["causal", "full"], default="causal")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    ours = subprocess.run(
        [args.binary, "bench", "cpu", "--json", "--seqs", args.seqs, "--batch", str(args.batch),
         "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--mask", args.mask,
         "--repeats", str(args.repeats), "--threads", str(threads)],
        check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in ours.splitlines() if line.strip()]

    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), distflash {rows[0]['isa']}, "
          f"{threads} threads, B={args.batch} H={args.heads} D={args.head_dim} {args.mask} fp32, "
          f"median of {args.repeats}")
    print("| S | distflash fwd GFLOP/s | torch fwd GFLOP/s | fwd ratio | distflash fwd+bwd GFLOP/s | "
          "torch fwd+bwd GFLOP/s | fwd+bwd ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        s = row["seq"]
        pairs = s * (s + 1) // 2 if args.mask == "causal" else s * s
        flops = 4 * args.batch * args.heads * args.head_dim * pairs
        fwd, both = row["forward_ms"] / 1e3, row["fwd_bwd_ms"] / 1e3
        t_fwd, t_both = torch_times(args.batch, args.heads, s, args.head_dim, args.mask == "causal", args.repeats)
        print(f"| {s} | {flops / fwd / 1e9:.1f} | {flops / t_fwd / 1e9:.1f} | {t_fwd / fwd:.2f}× | "
              f"{3.5 * flops / both / 1e9:.1f} | {3.5 * flops / t_both / 1e9:.1f} | {t_both / both:.2f}× |")


if __name__ == "__main__":
    main()
