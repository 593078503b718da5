#!/usr/bin/env python3
"""Cross-check distflash against an independent float64 NumPy attention, through .npy files.

Writes random q, k, v, dO as .npy (float32 and float64 variants), runs
`distflash attention --inputs DIR --outputs DIR --backward` for several masks, and compares o, lse, dq, dk, dv
with a NumPy float64 implementation written here from the definitions (materialised scores). Exits non-zero on
any mismatch. Also checks that malformed inputs fail with a message and leave no output files.

    python3 scripts/crosscheck_numpy.py --binary .build/release/distflash
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def visible(s, mask, doc_lens):
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    if mask == "full":
        ok = np.ones((s, s), bool)
    elif mask == "causal":
        ok = j <= i
    else:
        w = int(mask.split("=")[1])
        ok = (j <= i) & (j > i - w)
    if doc_lens:
        doc = np.repeat(np.arange(len(doc_lens)), doc_lens)
        ok &= doc[:, None] == doc[None, :]
    return ok


def attention64(q, k, v, do, mask, doc_lens):
    """Float64 forward and backward; q, do [B,S,H,D], k, v [B,S,Hkv,D]."""
    b, s, h, d = q.shape
    group = h // k.shape[2]
    scale = 1 / np.sqrt(d)
    kk, vv = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bihd,bjhd->bhij", q, kk) * scale
    ok = visible(s, mask, doc_lens)
    scores = np.where(ok, scores, -np.inf)
    top = scores.max(-1, keepdims=True)
    p = np.exp(scores - top)
    l = p.sum(-1, keepdims=True)
    p /= l
    o = np.einsum("bhij,bjhd->bihd", p, vv)
    lse = (top + np.log(l))[..., 0]
    dp = np.einsum("bihd,bjhd->bhij", do, vv)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    dq = np.einsum("bhij,bjhd->bihd", ds, kk) * scale
    dk = np.einsum("bhij,bihd->bjhd", ds, q) * scale
    dv = np.einsum("bhij,bihd->bjhd", p, do)
    fold = lambda t: t.reshape(b, s, k.shape[2], group, d).sum(3)
    return {"o": o, "lse": lse, "dq": dq, "dk": fold(dk), "dv": fold(dv)}


def run(binary, args):
    return subprocess.run([binary, "attention", *args], capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=".build/release/distflash")
    opts = parser.parse_args()
    rng = np.random.default_rng()
    failures = 0
    cases = [("causal", None, np.float32), ("full", None, np.float64), ("window=40", None, np.float32),
             ("causal", [1, 60, 36], np.float32)]
    for mask, docs, dtype in cases:
        b, s, h, hkv, d = 2, 97, 6, 2, 59
        arrays = {"q": rng.standard_normal((b, s, h, d)), "k": rng.standard_normal((b, s, hkv, d)),
                  "v": rng.standard_normal((b, s, hkv, d)), "do": rng.standard_normal((b, s, h, d))}
        arrays = {name: a.astype(dtype) for name, a in arrays.items()}
        with tempfile.TemporaryDirectory() as folder:
            for name, a in arrays.items():
                np.save(os.path.join(folder, f"{name}.npy"), a)
            out = os.path.join(folder, "out")
            flags = ["--inputs", folder, "--outputs", out, "--backward", "--mask", mask]
            if docs:
                flags += ["--doc-lens", ",".join(map(str, docs))]
            result = run(opts.binary, flags)
            if result.returncode != 0:
                print(f"FAIL {mask} {docs}: exit {result.returncode}\n{result.stderr}")
                failures += 1
                continue
            ref = attention64(*(arrays[n].astype(np.float64) for n in ("q", "k", "v", "do")), mask, docs)
            for name, expected in ref.items():
                got = np.load(os.path.join(out, f"{name}.npy"))
                ok = got.dtype == np.float32 and got.shape == expected.shape
                err = np.max(np.abs(got - expected)) if ok else np.inf
                bound = 1e-5 * max(1.0, np.max(np.abs(expected)))
                status = "ok" if err <= bound else "FAIL"
                failures += status == "FAIL"
                print(f"{status} {mask:10} docs={docs} {dtype.__name__:8} {name:3} shape {got.shape} "
                      f"max err {err:.2e} (bound {bound:.1e})")

    # Malformed inputs: a message, a non-zero exit, and no output files.
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "q.npy"), np.zeros((1, 8, 4, 16), np.float32))
        np.save(os.path.join(folder, "k.npy"), np.zeros((1, 8, 3, 16), np.float32))
        np.save(os.path.join(folder, "v.npy"), np.zeros((1, 8, 3, 16), np.int32))
        out = os.path.join(folder, "out")
        result = run(opts.binary, ["--inputs", folder, "--outputs", out])
        leftovers = os.listdir(out) if os.path.exists(out) else []
        good = result.returncode != 0 and "v.npy" in result.stderr and not leftovers
        failures += not good
        print(f"{'ok' if good else 'FAIL'} malformed v.npy: exit {result.returncode}, "
              f"message: {result.stderr.strip().splitlines()[-1] if result.stderr else ''}, outputs left: {leftovers}")

    print("crosscheck " + ("passed" if failures == 0 else f"FAILED ({failures})"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
