#!/usr/bin/env python3
"""PyTorch context parallelism (ring attention over N GPUs) as the baseline for our multi-GPU attention benchmark.

Times F.scaled_dot_product_attention inside torch.distributed.tensor.experimental.context_parallel: every rank builds
the same full Q, K, V, dO (bf16, B=1, H query heads, H_kv key/value heads, head dim D, sequence S; same seed on every
rank), context_parallel shards them along the sequence (dim 2) and patches SDPA with its ring attention, which
rotates the K/V shards between ranks ('allgather' pass-KV by default, or 'alltoall') and merges the partial results
through their log-sum-exp in fp32. The SDPA kernel is picked with torch.nn.attention.sdpa_kernel: flash by default
(context parallelism handles only the flash, memory-efficient and cuDNN SDPA kernels). For causal masks
context_parallel reorders the sequence head-tail before sharding (rank r holds chunks r and 2N-1-r of 2N) so
every rank does the same work; for full masks the load balancer is switched off, which ring attention requires.

GQA (H_kv < H): the ring code rotates K and V at whatever head count they have and the flash kernel accepts
enable_gqa=True, so by default (--gqa auto) the script first checks that context_parallel with enable_gqa=True gives
the same output and gradients as plain one-GPU SDPA on a small sequence; if it does, K/V stay at H_kv heads and the
ring moves H_kv-sized K/V. If the check fails, or with --gqa expand, K and V are expanded to H heads with
repeat_interleave before the call (outside the timed region), so the ring moves H-sized K/V, as PyTorch users who
repeat K/V in their model do. The header line and every row say which was used.

Timing: CUDA events, 2 warm-up iterations, then the median of --repeats, each iteration after a barrier; the
number reported is the largest median over the ranks. Forward runs under no_grad; forward+backward is SDPA then
torch.autograd.grad for dQ, dK, dV. A shape that runs out of GPU memory gets an OOM row.
FLOPs: forward 4·B·S²·H·D, halved for causal; backward 2.5× forward; forward+backward 3.5× forward.
TFLOP/s per GPU = FLOPs / time / number of GPUs / 1e12.

    torchrun --nproc-per-node 4 bench/torch_context_parallel.py [--seqs 32768,65536,131072,262144] [--heads 32]
        [--kv-heads 32] [--head-dim 128] [--masks causal,full] [--rotate allgather|alltoall] [--repeats 5]
        [--gqa auto|native|expand] [--backend flash|cudnn|efficient] [--json FILE]

--json appends one JSON object per row (jsonl) to FILE. --device cpu (gloo) exists only to smoke-test the
argument handling and the process-group plumbing; context_parallel's ring attention is for CUDA SDPA kernels.
"""
import argparse
import gc
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.experimental import context_parallel
from torch.distributed.tensor.experimental._attention import _cp_options, context_parallel_unshard, set_rotate_method
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}
SEED = 1234
PROBE_TOLERANCE = 5e-2  # max |cp - ref| / max |ref|; bf16 rounding is ~1e-2, a wrong result is ~1


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", default="32768,65536,131072,262144", help="total sequence lengths, comma-separated")
    parser.add_argument("--heads", type=int, default=32, help="query heads H")
    parser.add_argument("--kv-heads", type=int, default=None, help="key/value heads H_kv (default: H)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--masks", default="causal,full")
    parser.add_argument("--rotate", choices=["allgather", "alltoall"], default="allgather")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gqa", choices=["auto", "native", "expand"], default="auto",
                        help="H_kv < H: enable_gqa=True (native), K/V repeat_interleave'd to H heads (expand), or "
                             "native if a small correctness check passes (auto)")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="flash", help="SDPA kernel")
    parser.add_argument("--json", default=None, help="append one JSON object per row to this file")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    args.kv_heads = args.heads if args.kv_heads is None else args.kv_heads
    if args.heads % args.kv_heads:
        parser.error("--heads must be a multiple of --kv-heads")
    args.seqs = [int(s) for s in args.seqs.split(",") if s]
    args.masks = [m for m in args.masks.split(",") if m]
    if any(m not in ("causal", "full") for m in args.masks):
        parser.error("--masks takes causal and/or full")
    return args


class Runner:
    def __init__(self, args):
        self.args = args
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ["LOCAL_RANK"])
        self.cuda = args.device == "cuda"
        if self.cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
            dist.init_process_group(backend="nccl", device_id=self.device)
        else:
            self.device = torch.device("cpu")
            dist.init_process_group(backend="gloo")
        self.mesh = init_device_mesh(args.device, (self.world,), mesh_dim_names=("cp",))
        set_rotate_method(args.rotate)
        self.backend = BACKENDS[args.backend]
        self.dtype = torch.bfloat16

    # ---- helpers -------------------------------------------------------------------------------------------------

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def barrier(self):
        if self.cuda:
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()
        self.sync()

    def all_max(self, values):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def inputs(self, s, h_kv, with_grad_out):
        """Full (B, heads, S, D) tensors, identical on every rank."""
        gen = torch.Generator(device=self.device).manual_seed(SEED + s)
        d, h = self.args.head_dim, self.args.heads
        shapes = [(1, h, s, d), (1, h_kv, s, d), (1, h_kv, s, d)] + ([(1, h, s, d)] if with_grad_out else [])
        return [torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype) for shape in shapes]

    def kv_for_call(self, k, v, native_gqa):
        """K, V and the SDPA keyword arguments for the configured GQA handling."""
        groups = self.args.heads // k.size(1)
        if groups == 1:
            return k, v, {}
        if native_gqa:
            return k, v, {"enable_gqa": True}
        return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), {}

    def set_load_balance(self, causal):
        # context_parallel reorders the sequence head-tail (causal load balancing) while this flag is on; the ring
        # raises for non-causal SDPA with it on. It is a module-level option; context_parallel restores it on exit.
        _cp_options.enable_load_balance = causal

    def timed(self, fn):
        for _ in range(self.args.warmup):
            fn()
        times = []
        for _ in range(self.args.repeats):
            self.barrier()
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    # ---- correctness check (used for --gqa auto, reported always) ----------------------------------------------

    def check(self, causal, native_gqa):
        """Max relative error of context_parallel SDPA (output, dQ, dK, dV) against one-rank SDPA, small S."""
        s = 256 * 2 * self.world
        q, k, v, dout = self.inputs(s, self.args.kv_heads, with_grad_out=True)
        kc, vc, kw = self.kv_for_call(k, v, native_gqa)
        kc, vc = kc.contiguous(), vc.contiguous()
        with sdpa_kernel(self.backend):
            qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, kc, vc))
            out_ref = F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal, **kw)
            ref = [out_ref.detach(), *torch.autograd.grad(out_ref, (qr, kr, vr), dout)]

            cp = [t.detach().clone() for t in (q, kc, vc, dout)]
            self.set_load_balance(causal)
            with context_parallel(self.mesh, buffers=cp, buffer_seq_dims=[2, 2, 2, 2], no_restore_buffers=set(cp)):
                ql, kl, vl = (t.detach().requires_grad_(True) for t in cp[:3])
                out = F.scaled_dot_product_attention(ql, kl, vl, is_causal=causal, **kw)
                got = [out.detach(), *torch.autograd.grad(out, (ql, kl, vl), cp[3])]
            # context_parallel restored the flag to `causal` on exit, so unshard undoes the same reordering.
            got = context_parallel_unshard(self.mesh, [t.contiguous() for t in got], [2, 2, 2, 2])
        errs = [((g.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-6)).item()
                for g, r in zip(got, ref)]
        return max(self.all_max(errs))

    def decide_gqa(self):
        """Returns (native_gqa, note)."""
        mode = self.args.gqa
        if self.args.kv_heads == self.args.heads:
            return False, "MHA"
        if mode == "expand":
            return False, "expand (K/V repeat_interleave'd to H heads; ring moves H-sized K/V)"
        if mode == "native":
            return True, "native (enable_gqa=True; ring moves H_kv-sized K/V)"
        try:
            errs = [self.check(m == "causal", native_gqa=True) for m in self.args.masks]
            if max(errs) <= PROBE_TOLERANCE:
                return True, f"native (enable_gqa=True; ring moves H_kv-sized K/V; check max rel err {max(errs):.1e})"
            reason = f"check max rel err {max(errs):.1e}"
        except Exception as error:  # noqa: BLE001 - any failure means: not supported here
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''}"
        # a failure inside one rank's collectives could leave ranks unsynchronised; realign before going on
        self.barrier()
        return False, f"expand (K/V repeat_interleave'd to H heads; ring moves H-sized K/V); enable_gqa failed: {reason}"

    # ---- benchmark ----------------------------------------------------------------------------------------------

    def measure(self, causal, s, native_gqa):
        q, k, v, dout = self.inputs(s, self.args.kv_heads, with_grad_out=True)
        k, v, kw = self.kv_for_call(k, v, native_gqa)
        buffers = [q, k.contiguous(), v.contiguous(), dout]
        del q, k, v, dout
        self.set_load_balance(causal)
        with sdpa_kernel(self.backend), context_parallel(
                self.mesh, buffers=buffers, buffer_seq_dims=[2, 2, 2, 2], no_restore_buffers=set(buffers)):
            q, k, v, dout = buffers
            qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

            def forward():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)

            def forward_backward():
                out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, **kw)
                torch.autograd.grad(out, (qg, kg, vg), dout)

            fwd = self.timed(forward)
            fwd_bwd = self.timed(forward_backward)
        return fwd, fwd_bwd

    def run(self):
        a = self.args
        if self.cuda:
            gpu = torch.cuda.get_device_name(self.device)
            version = torch.cuda.nccl.version()
            nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        else:
            gpu, nccl = "cpu", "n/a (gloo)"
        native_gqa, gqa_note = self.decide_gqa()
        checks = {}
        for mask in a.masks:
            try:
                checks[mask] = f"{self.check(mask == 'causal', native_gqa):.1e}"
            except Exception as error:  # noqa: BLE001 - report, keep benchmarking
                checks[mask] = f"failed ({type(error).__name__})"
                self.barrier()
        json_file = open(a.json, "a") if a.json and self.rank == 0 else None
        if self.rank == 0:
            print(f"{gpu}, torch {torch.__version__}, NCCL {nccl}, world size {self.world}, "
                  f"rotate {a.rotate}, SDPA backend {a.backend}, context_parallel ring attention, bf16 B=1 "
                  f"D={a.head_dim}, GQA: {gqa_note}; CP vs one-rank SDPA max rel err (out/dQ/dK/dV): "
                  + ", ".join(f"{m} {e}" for m, e in checks.items()), flush=True)
            print("| mask | S | H/H_kv | fwd ms | fwd TFLOP/s/GPU | fwd+bwd ms | fwd+bwd TFLOP/s/GPU |")
            print("|---|---:|---|---:|---:|---:|---:|", flush=True)
        heads = f"{a.heads}/{a.kv_heads}"
        for mask in a.masks:
            causal = mask == "causal"
            for s in a.seqs:
                row = {"mask": mask, "S": s, "B": 1, "H": a.heads, "H_kv": a.kv_heads, "D": a.head_dim,
                       "world_size": self.world, "rotate": a.rotate, "backend": a.backend,
                       "gqa": "native" if native_gqa else ("expand" if a.kv_heads != a.heads else "mha"),
                       "gpu": gpu, "torch": torch.__version__, "nccl": nccl}
                if s % self.world:
                    status, fwd, fwd_bwd = f"skipped: S not divisible by {self.world}", None, None
                else:
                    status = "ok"
                    try:
                        fwd, fwd_bwd = self.measure(causal, s, native_gqa)
                    except torch.cuda.OutOfMemoryError:
                        status, fwd, fwd_bwd = "OOM", None, None
                    gc.collect()
                    if self.cuda:
                        torch.cuda.empty_cache()
                    # every rank must agree on the outcome before the next shape
                    oom_any, = self.all_max([1.0 if status == "OOM" else 0.0])
                    if oom_any:
                        status, fwd, fwd_bwd = "OOM", None, None
                    else:
                        fwd, fwd_bwd = self.all_max([fwd, fwd_bwd])
                flops = 4 * s * s * a.heads * a.head_dim / (2 if causal else 1)
                if status == "ok":
                    tf = flops / fwd / self.world / 1e12
                    tfb = 3.5 * flops / fwd_bwd / self.world / 1e12
                    row.update(status="ok", fwd_ms=fwd * 1e3, fwd_tflops_per_gpu=tf,
                               fwd_bwd_ms=fwd_bwd * 1e3, fwd_bwd_tflops_per_gpu=tfb)
                    line = f"| {mask} | {s} | {heads} | {fwd * 1e3:.2f} | {tf:.1f} | {fwd_bwd * 1e3:.2f} | {tfb:.1f} |"
                else:
                    row.update(status=status)
                    line = f"| {mask} | {s} | {heads} | {status} | | | |"
                if self.rank == 0:
                    print(line, flush=True)
                    if json_file:
                        json_file.write(json.dumps(row) + "\n")
                        json_file.flush()
        if json_file:
            json_file.close()


def main():
    args = parse_args()
    runner = Runner(args)
    try:
        runner.run()
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
