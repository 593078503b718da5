// Kernel lab harness for the attention backward: each candidate against naive fp32 GPU references (odd sizes,
// every mask, GQA, strided positions; gradients start non-zero to test that the kernel adds), then timed with CUDA
// events on the benchmark shapes (bf16, B=1, H=32, D=128). Build and run with lab/run_backward.sh.
#include "common.cuh"
// The shared primitives once, at global scope, for every candidate (the kernel files' own #include of it is then
// skipped by its #pragma once).
#include "../../Sources/DistFlashAttnCUDA/kernels/mma_primitives.cuh"
#include "../../Sources/DistFlashAttnCUDA/kernels/wgmma_primitives.cuh"
#include "../../Sources/DistFlashAttnCUDA/kernels/tma_primitives.cuh"
#include "tensor_map.cuh"

namespace mainline {
#include "../../Sources/DistFlashAttnCUDA/kernels/attention_backward_mma.cu"
#include "../../Sources/DistFlashAttnCUDA/kernels/attention_backward_wgmma.cu"
}

// δ_i = dO_i·O_i, then dQ_i = scale Σ_j P_ij (dO_i·V_j − δ_i) K_j; one thread per (row, head, batch).
__global__ void reference_dq(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout, const float *o,
                             const float *lse, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                             float *dq, float *delta, int Sq, int Sk, int H, int Hkv, int D, float scale, int kind,
                             int window) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= Sq) return;
    int kvh = h / (H / Hkv);
    const bf16 *qi = q + ((size_t)(b * Sq + i) * H + h) * D, *doi = dout + ((size_t)(b * Sq + i) * H + h) * D;
    float d = 0;
    for (int c = 0; c < D; c++) d += __uint_as_float((unsigned)doi[c] << 16) * o[((size_t)(b * Sq + i) * H + h) * D + c];
    delta[((size_t)b * H + h) * Sq + i] = d;
    float L = lse[((size_t)b * H + h) * Sq + i];
    float *out = dq + ((size_t)(b * Sq + i) * H + h) * D;
    for (int j = 0; j < Sk; j++) {
        bool see = qdoc[i] == kdoc[j] && (kind == 1 || (kpos[j] <= qpos[i] && (kind != 2 || kpos[j] > qpos[i] - window)));
        if (!see) continue;
        const bf16 *kj = k + ((size_t)(b * Sk + j) * Hkv + kvh) * D, *vj = v + ((size_t)(b * Sk + j) * Hkv + kvh) * D;
        float s = 0, dp = 0;
        for (int c = 0; c < D; c++) {
            s += __uint_as_float((unsigned)qi[c] << 16) * __uint_as_float((unsigned)kj[c] << 16);
            dp += __uint_as_float((unsigned)doi[c] << 16) * __uint_as_float((unsigned)vj[c] << 16);
        }
        float ds = expf(s * scale - L) * (dp - d) * scale;
        for (int c = 0; c < D; c++) out[c] += ds * __uint_as_float((unsigned)kj[c] << 16);
    }
}

// dK_j, dV_j summed over the group's heads and every query; one thread per (key, kv head, batch).
__global__ void reference_dkdv(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse,
                               const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                               float *dk, float *dv, int Sq, int Sk, int H, int Hkv, int D, float scale, int kind,
                               int window) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    if (j >= Sk) return;
    const bf16 *kj = k + ((size_t)(b * Sk + j) * Hkv + kvh) * D, *vj = v + ((size_t)(b * Sk + j) * Hkv + kvh) * D;
    float *gk = dk + ((size_t)(b * Sk + j) * Hkv + kvh) * D, *gv = dv + ((size_t)(b * Sk + j) * Hkv + kvh) * D;
    for (int h = kvh * (H / Hkv); h < (kvh + 1) * (H / Hkv); h++)
        for (int i = 0; i < Sq; i++) {
            bool see = qdoc[i] == kdoc[j] && (kind == 1 || (kpos[j] <= qpos[i] && (kind != 2 || kpos[j] > qpos[i] - window)));
            if (!see) continue;
            const bf16 *qi = q + ((size_t)(b * Sq + i) * H + h) * D, *doi = dout + ((size_t)(b * Sq + i) * H + h) * D;
            float s = 0, dp = 0;
            for (int c = 0; c < D; c++) {
                s += __uint_as_float((unsigned)qi[c] << 16) * __uint_as_float((unsigned)kj[c] << 16);
                dp += __uint_as_float((unsigned)doi[c] << 16) * __uint_as_float((unsigned)vj[c] << 16);
            }
            float p = expf(s * scale - lse[((size_t)b * H + h) * Sq + i]);
            float ds = p * (dp - delta[((size_t)b * H + h) * Sq + i]) * scale;
            for (int c = 0; c < D; c++) {
                gk[c] += ds * __uint_as_float((unsigned)qi[c] << 16);
                gv[c] += p * __uint_as_float((unsigned)doi[c] << 16);
            }
        }
}

typedef void (*Backward)(const bf16 *, const bf16 *, const bf16 *, const bf16 *, const float *, const float *,
                         const int *, const int *, const int *, const int *, const int4 *, const int4 *, float *,
                         float *, float *, int, int, int, int, int, float, int, int);
// TMA kernels: Q and dO as tensor maps (64-row boxes), 384 threads (a producer warpgroup).
typedef void (*BackwardTMA)(const TensorMap, const bf16 *, const bf16 *, const TensorMap, const float *,
                            const float *, const int *, const int *, const int *, const int *, const int4 *,
                            const int4 *, float *, float *, float *, int, int, int, int, int, float, int, int);

struct Candidate {
    std::string name;
    int D, warps;
    Backward kernel;
    int stages = 1;  // buffers of the Q, dO, LSE and δ tiles (2: the next tile loads while this one computes)
    int keys_per_warp = 16;
    int query_tile = 64;
    size_t shared_bytes = 0;  // when set: the candidate's own layout
    BackwardTMA tma = nullptr;
    bool per_query_head = false;  // a row of blocks per query head (dK, dV by reductions) instead of per KV head
    int keys() const { return keys_per_warp * warps; }
    size_t shared() const {
        if (shared_bytes) return shared_bytes;
        return (size_t)(2 * keys() + 2 * query_tile * stages) * (D + 8) * 2 + keys() * (query_tile + 8) * 2
               + 2 * query_tile * 4 * stages;
    }
};

struct Buffers {
    bf16 *dout;
    float *o, *lse, *delta, *dq, *dk, *dv;
};

static void launch(const Candidate &c, const Problem &p, const DeviceProblem &d, const Buffers &x) {
    int qtiles = (p.Sq + c.query_tile - 1) / c.query_tile, ktiles = (p.Sk + c.keys() - 1) / c.keys();
    // The wgmma kernels' tile-laid-out dQ: zeroed, filled by the kernel, added into x.dq (all inside the timed
    // region, as the backend pays them).
    static float *dq_tiles = nullptr;
    static size_t dq_tiles_bytes = 0;
    float *dq = x.dq;
    if (c.tma) {
        const size_t bytes = (size_t)p.B * p.H * qtiles * c.query_tile * p.D * 4;
        if (bytes > dq_tiles_bytes) {
            if (dq_tiles) CHECK(cudaFree(dq_tiles));
            CHECK(cudaMalloc(&dq_tiles, bytes));
            dq_tiles_bytes = bytes;
        }
        CHECK(cudaMemsetAsync(dq_tiles, 0, bytes));
        dq = dq_tiles;
    }
    attention_tile_bounds<<<(qtiles + 127) / 128, 128>>>(d.qpos, d.qdoc, p.Sq, c.query_tile, d.qbounds);
    attention_tile_bounds<<<(ktiles + 127) / 128, 128>>>(d.kpos, d.kdoc, p.Sk, c.keys(), d.kbounds);
    if (c.tma)
        c.tma<<<dim3(ktiles, c.per_query_head ? p.H : p.Hkv, p.B), 384, c.shared()>>>(
            tensor_map(d.q, p.D, p.H, p.Sq, p.B, c.query_tile), d.k, d.v,
            tensor_map(x.dout, p.D, p.H, p.Sq, p.B, c.query_tile), x.lse, x.delta, d.qpos, d.kpos, d.qdoc, d.kdoc,
            d.qbounds, d.kbounds, dq, x.dk, x.dv, p.Sq, p.Sk, p.H, p.Hkv, p.D, 1.f / sqrtf((float)p.D), p.kind,
            p.window);
    else
        c.kernel<<<dim3(ktiles, p.Hkv, p.B), c.warps * 32, c.shared()>>>(
            d.q, d.k, d.v, x.dout, x.lse, x.delta, d.qpos, d.kpos, d.qdoc, d.kdoc, d.qbounds, d.kbounds, x.dq, x.dk,
            x.dv, p.Sq, p.Sk, p.H, p.Hkv, p.D, 1.f / sqrtf((float)p.D), p.kind, p.window);
    if (c.tma) {
        const size_t quads = (size_t)p.B * p.Sq * p.H * p.D / 4;
        const unsigned blocks = (unsigned)std::min<size_t>((quads + 255) / 256, 65535);
        if (c.D == 64) mainline::attention_dq_from_tiles_d64<<<blocks, 256>>>(dq_tiles, x.dq, p.Sq, p.H, p.B);
        else mainline::attention_dq_from_tiles_d128<<<blocks, 256>>>(dq_tiles, x.dq, p.Sq, p.H, p.B);
    }
    CHECK(cudaGetLastError());
}

static Buffers prepare(const Problem &p, const DeviceProblem &d, std::mt19937 &rng) {
    std::normal_distribution<float> normal;
    size_t nq = (size_t)p.B * p.Sq * p.H * p.D, nl = (size_t)p.B * p.H * p.Sq, nk = (size_t)p.B * p.Sk * p.Hkv * p.D;
    std::vector<bf16> dout(nq);
    for (auto &e : dout) e = to_bf16(normal(rng));
    Buffers x;
    x.dout = device_copy(dout);
    CHECK(cudaMalloc(&x.o, nq * 4)); CHECK(cudaMalloc(&x.lse, nl * 4)); CHECK(cudaMalloc(&x.delta, nl * 4));
    CHECK(cudaMalloc(&x.dq, nq * 4)); CHECK(cudaMalloc(&x.dk, nk * 4)); CHECK(cudaMalloc(&x.dv, nk * 4));
    reference_forward<<<dim3((p.Sq + 63) / 64, p.H, p.B), 64>>>(d.q, d.k, d.v, d.qpos, d.kpos, d.qdoc, d.kdoc, x.o,
                                                                x.lse, p.Sq, p.Sk, p.H, p.Hkv, p.D,
                                                                1.f / sqrtf((float)p.D), p.kind, p.window);
    CHECK(cudaMemset(x.dq, 0, nq * 4));
    reference_dq<<<dim3((p.Sq + 63) / 64, p.H, p.B), 64>>>(d.q, d.k, d.v, x.dout, x.o, x.lse, d.qpos, d.kpos, d.qdoc,
                                                           d.kdoc, x.dq, x.delta, p.Sq, p.Sk, p.H, p.Hkv, p.D,
                                                           1.f / sqrtf((float)p.D), p.kind, p.window);
    CHECK(cudaDeviceSynchronize());
    return x;
}

static void release(Buffers &x) {
    for (void *p : {(void *)x.dout, (void *)x.o, (void *)x.lse, (void *)x.delta, (void *)x.dq, (void *)x.dk, (void *)x.dv})
        CHECK(cudaFree(p));
}

static std::vector<float> download(const float *p, size_t n) {
    std::vector<float> h(n);
    CHECK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return h;
}

// Error relative to the largest reference value, at least 1 (bf16 P and dS in the mma: ~2⁻⁸ relative; where the
// gradient vanishes, e.g. S = 1 where dS = 0, the rounding noise is judged against 1).
static double relative_error(const std::vector<float> &ours, const std::vector<float> &ref, float offset) {
    double e = 0, top = 1;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(ours[i])) return INFINITY;
        e = std::max(e, (double)fabsf(ours[i] - offset - ref[i]));
        top = std::max(top, (double)fabsf(ref[i]));
    }
    return e / top;
}

static bool check(const Candidate &c, const Problem &p, const char *what, std::mt19937 &rng) {
    DeviceProblem d = upload(p, rng);
    Buffers x = prepare(p, d, rng);
    size_t nq = (size_t)p.B * p.Sq * p.H * p.D, nk = (size_t)p.B * p.Sk * p.Hkv * p.D;
    std::vector<float> rq = download(x.dq, nq);
    float *rk, *rv;
    CHECK(cudaMalloc(&rk, nk * 4)); CHECK(cudaMalloc(&rv, nk * 4));
    CHECK(cudaMemset(rk, 0, nk * 4)); CHECK(cudaMemset(rv, 0, nk * 4));
    reference_dkdv<<<dim3((p.Sk + 63) / 64, p.Hkv, p.B), 64>>>(d.q, d.k, d.v, x.dout, x.lse, x.delta, d.qpos, d.kpos,
                                                               d.qdoc, d.kdoc, rk, rv, p.Sq, p.Sk, p.H, p.Hkv, p.D,
                                                               1.f / sqrtf((float)p.D), p.kind, p.window);
    // Start every gradient at 1: the kernel must add.
    std::vector<float> ones(std::max(nq, nk), 1.f);
    CHECK(cudaMemcpy(x.dq, ones.data(), nq * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x.dk, ones.data(), nk * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x.dv, ones.data(), nk * 4, cudaMemcpyHostToDevice));
    launch(c, p, d, x);
    CHECK(cudaDeviceSynchronize());
    double eq = relative_error(download(x.dq, nq), rq, 1.f), ek = relative_error(download(x.dk, nk), download(rk, nk), 1.f),
           ev = relative_error(download(x.dv, nk), download(rv, nk), 1.f);
    bool ok = eq < 2e-2 && ek < 2e-2 && ev < 2e-2;
    printf("check %-16s %-34s rel err dQ %.2e dK %.2e dV %.2e %s\n", c.name.c_str(), what, eq, ek, ev, ok ? "ok" : "FAIL");
    CHECK(cudaFree(rk)); CHECK(cudaFree(rv));
    release(x);
    release(d);
    return ok;
}

static double time_ms(const Candidate &c, const Problem &p, std::mt19937 &rng, int repeats) {
    DeviceProblem d = upload(p, rng);
    size_t nq = (size_t)p.B * p.Sq * p.H * p.D, nl = (size_t)p.B * p.H * p.Sq, nk = (size_t)p.B * p.Sk * p.Hkv * p.D;
    Buffers x;
    std::vector<bf16> dout(nq, to_bf16(0.01f));
    x.dout = device_copy(dout);
    x.o = nullptr;
    CHECK(cudaMalloc(&x.lse, nl * 4)); CHECK(cudaMalloc(&x.delta, nl * 4));
    CHECK(cudaMalloc(&x.dq, nq * 4)); CHECK(cudaMalloc(&x.dk, nk * 4)); CHECK(cudaMalloc(&x.dv, nk * 4));
    std::vector<float> lse(nl, 8.f);  // plausible magnitudes: P stays finite
    CHECK(cudaMemcpy(x.lse, lse.data(), nl * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(x.delta, 0, nl * 4));
    cudaEvent_t start, end;
    CHECK(cudaEventCreate(&start)); CHECK(cudaEventCreate(&end));
    std::vector<float> times;
    for (int r = 0; r <= repeats; r++) {
        CHECK(cudaMemset(x.dq, 0, nq * 4)); CHECK(cudaMemset(x.dk, 0, nk * 4)); CHECK(cudaMemset(x.dv, 0, nk * 4));
        CHECK(cudaEventRecord(start));
        launch(c, p, d, x);
        CHECK(cudaEventRecord(end));
        CHECK(cudaEventSynchronize(end));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, start, end));
        if (r > 0) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    release(x);
    release(d);
    return times[times.size() / 2];
}

int main(int argc, char **argv) {
    std::string only, skip;
    for (int a = 1; a < argc; a++) {  // --only=TEXT / --skip=TEXT: candidates by name (common.cuh)
        std::string arg = argv[a];
        if (arg.rfind("--only=", 0) == 0) only = arg.substr(7);
        if (arg.rfind("--skip=", 0) == 0) skip = arg.substr(7);
    }
    using namespace mainline;
    std::vector<Candidate> candidates = {
        {"bwd d64 w4", 64, 4, (Backward)attention_backward_mma_d64_w4},
        {"bwd d64 w8", 64, 8, (Backward)attention_backward_mma_d64_w8},
        {"bwd d128 w4", 128, 4, (Backward)attention_backward_mma_d128_w4},
        {"bwd d128 w8", 128, 8, (Backward)attention_backward_mma_d128_w8},
#define WGMMA(NAME, D, BM, KERNEL) {NAME, D, 8, nullptr, 2, 16, BM, \
                  (size_t)(2 * 128 + 4 * BM) * D * 2 + 2 * 128 * BM * 2 + 4 * BM * 4 + 4 * BM * D + 1024 + (D == 64 ? 128 * 64 * 2 : 0), \
                  (BackwardTMA)KERNEL}
        WGMMA("bwd d64 wgmma", 64, 128, attention_backward_wgmma_d64),
        WGMMA("bwd d64 wgmma per-head", 64, 128, attention_backward_wgmma_d64),
        WGMMA("bwd d128 wgmma", 128, 64, attention_backward_wgmma_d128),
    };
    for (auto &c : candidates) c.per_query_head = c.name.find("per-head") != std::string::npos;
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(), [&](const Candidate &c) {
        return (!only.empty() && !names_any(c.name, only)) || names_any(c.name, skip);
    }), candidates.end());
    for (auto &c : candidates)
        CHECK(cudaFuncSetAttribute(c.tma ? (const void *)c.tma : (const void *)c.kernel,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c.shared()));
    std::mt19937 rng(2027);
    if (argc > 1 && std::string(argv[1]) == "--profile") {  // one timed case per candidate but the w4 mainline, for ncu (lab/profile.sh)
        for (auto &c : candidates)
            if ((c.warps == 8 || c.query_tile == 32) && c.name.find("alt") == std::string::npos)  // alt readings may fault
                time_ms(c, make_problem(1, 16384, 32, 32, c.D, 0, 0), rng, 1);
        return 0;
    }
    int failures = 0;
    for (auto &c : candidates) {
        int D = c.D;
        failures += !check(c, make_problem(1, 1000, 6, 2, D, 0, 0), "causal S=1000 H=6/2", rng);
        failures += !check(c, make_problem(2, 97, 8, 1, D, 1, 0), "full B=2 S=97 H=8/1", rng);
        failures += !check(c, make_problem(1, 1, 2, 2, D, 0, 0), "causal S=1", rng);
        failures += !check(c, make_problem(1, 777, 4, 2, D, 2, 100), "window=100 S=777", rng);
        failures += !check(c, make_problem(1, 1025, 4, 4, D, 0, 0, {1, 500, 524}), "docs 1,500,524 causal", rng);
        failures += !check(c, make_problem(1, 300, 2, 1, D, 1, 0, {150, 150}), "docs 150,150 full", rng);
        failures += !check(c, make_problem(1, 513, 2, 2, D, 0, 0, {}, 3, 1), "causal strided positions", rng);
    }
    printf("correctness: %d failures\n\nname,mask,S,H_kv,ms,tflops\n", failures);
    for (auto &c : candidates)
        for (int kind : {0, 1})
            for (int S : {4096, 8192, 16384, 32768})
                for (int Hkv : {32, 8}) {  // GQA (32 / 8, llama-1b's) at D = 64 only
                    if (c.D == 64 && S < 16384) continue;
                    if (Hkv != 32 && c.D != 64) continue;
                    Problem p = make_problem(1, S, 32, Hkv, c.D, kind, 0);
                    double ms = time_ms(c, p, rng, 10);
                    double flops = 2.5 * 4.0 * S * (double)S * 32 * c.D / (kind == 0 ? 2 : 1);
                    printf("%s,%s,%d,%d,%.3f,%.1f\n", c.name.c_str(), kind == 0 ? "causal" : "full", S, Hkv, ms,
                           flops / ms / 1e9);
                    fflush(stdout);
                }
    return failures ? 1 : 0;
}
