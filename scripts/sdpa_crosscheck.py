#!/usr/bin/env python3
"""distflash's CUDA backend beside PyTorch scaled_dot_product_attention on the GPU, on the same .npy inputs.

Inputs are bf16-representable; PyTorch computes SDPA in float32 (math backend) on them, forward and backward, as
the reference. The rule of flash-attention's tests: our error must stay within twice that of PyTorch's flash backend
in bf16 (plus 1e-4 · max(1, max|ref|)). Exits non-zero on a mismatch.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="bin/distflash")
    opts = parser.parse_args()
    failures = 0
    for b, s, h, hkv, d, causal in [(2, 333, 8, 2, 64, True), (1, 1000, 6, 6, 128, False), (1, 517, 4, 1, 128, True)]:
        torch.manual_seed(s)
        q, k, v, do = (torch.randn(b, s, n, d).bfloat16().float() for n in (h, hkv, hkv, h))
        with tempfile.TemporaryDirectory() as folder:
            for name, t in zip(("q", "k", "v", "do"), (q, k, v, do)):
                np.save(os.path.join(folder, f"{name}.npy"), t.numpy())
            out = os.path.join(folder, "out")
            subprocess.run([opts.binary, "attention", "--backend", "cuda", "--inputs", folder, "--outputs", out,
                            "--backward", "--mask", "causal" if causal else "full"], check=True, capture_output=True)
            ours = {n: torch.from_numpy(np.load(os.path.join(out, f"{n}.npy"))) for n in ("o", "dq", "dk", "dv")}
        qg, kg, vg = (t.cuda().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, enable_gqa=hkv != h)
        o.backward(do.cuda().transpose(1, 2))
        ref = {"o": o.detach().transpose(1, 2).cpu(), "dq": qg.grad.transpose(1, 2).cpu(),
               "dk": kg.grad.transpose(1, 2).cpu(), "dv": vg.grad.transpose(1, 2).cpu()}
        qb, kb, vb = (t.cuda().bfloat16().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal, enable_gqa=hkv != h)
        ob.backward(do.cuda().bfloat16().transpose(1, 2))
        flash = {"o": ob.detach().float().transpose(1, 2).cpu(), "dq": qb.grad.float().transpose(1, 2).cpu(),
                 "dk": kb.grad.float().transpose(1, 2).cpu(), "dv": vb.grad.float().transpose(1, 2).cpu()}
        for name in ref:
            err = (ours[name] - ref[name]).abs().max().item()
            flash_err = (flash[name] - ref[name]).abs().max().item()
            bound = 2 * flash_err + 1e-4 * max(1.0, ref[name].abs().max().item())
            ok = err <= bound
            failures += not ok
            print(f"{'ok' if ok else 'FAIL'} B={b} S={s} H={h}/{hkv} D={d} {'causal' if causal else 'full'} {name}: "
                  f"max |ours − torch fp32| {err:.2e}, flash bf16 {flash_err:.2e} (bound {bound:.1e})")
    print("sdpa crosscheck " + ("passed" if failures == 0 else f"FAILED ({failures})"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
