// Kernel lab harness for the attention forward: every candidate kernel against a naive fp32 GPU reference
// (odd sizes, every mask, GQA, folding into a partial, non-contiguous positions), then timed with CUDA events on
// the benchmark shapes (bf16, B=1, H=32, D, causal and full). Build and run with lab/run_forward.sh.
#include "common.cuh"
// The shared primitives once, at global scope, for every candidate (the kernel files' own #include of it is then
// skipped by its #pragma once).
#include "../../Sources/DistFlashAttnCUDA/kernels/mma_primitives.cuh"
#include "../../Sources/DistFlashAttnCUDA/kernels/wgmma_primitives.cuh"
#include "../../Sources/DistFlashAttnCUDA/kernels/tma_primitives.cuh"
#include "tensor_map.cuh"

namespace mainline {
#include "../../Sources/DistFlashAttnCUDA/kernels/attention_forward_mma.cu"
#include "../../Sources/DistFlashAttnCUDA/kernels/attention_forward_wgmma.cu"
// Shapes beside the mainline's two, from the same template.
FORWARD_MMA(64, 4, 2, 64, false, )
}
#undef FORWARD_MMA
namespace v1 {
#include "../forward/v1_mma_64x64.cu"
}

typedef void (*ForwardV2)(const bf16 *, const bf16 *, const bf16 *, const int *, const int *, const int *,
                          const int *, const int4 *, float *, float *, int, int, int, int, int, float, int, int);
typedef void (*ForwardV1)(const bf16 *, const bf16 *, const bf16 *, const int *, const int *, const int *,
                          const int *, float *, float *, int, int, int, int, int, float, int, int);

typedef void (*ForwardTMA)(const TensorMap, const TensorMap, const TensorMap, const int *, const int *,
                           const int *, const int *, const int4 *, float *, float *, int, int, int, int, int, float, int,
                           int);

struct Candidate {
    std::string name;
    int D, warps, mt, bn;
    ForwardV2 v2;
    ForwardV1 v1;
    size_t shared_bytes = 0;  // when the layout is not the padded (rows + 2·bn) × (D + 8) one
    ForwardTMA tma = nullptr;  // TMA kernels: a producer warpgroup and rows() / 64 consumers, Q, K, V as tensor maps
    int rows() const { return warps * 16 * mt; }
    size_t shared() const { return shared_bytes ? shared_bytes : v2 ? (size_t)(rows() + 2 * bn) * (D + 8) * 2 : 0; }
};

static void launch(const Candidate &c, const Problem &p, const DeviceProblem &d, float *o, float *lse,
                   int key_offset = 0) {
    float scale = 1.f / sqrtf((float)p.D);
    if (c.v1) {
        dim3 grid((p.Sq + 63) / 64, p.H, p.B);
        c.v1<<<grid, 128>>>(d.q, d.k, d.v, d.qpos, d.kpos, d.qdoc, d.kdoc, o, lse, p.Sq, p.Sk, p.H, p.Hkv, p.D,
                            scale, p.kind, p.window);
    } else if (c.tma) {
        int tiles = (p.Sk + c.bn - 1) / c.bn;
        ::attention_tile_bounds<<<(tiles + 127) / 128, 128>>>(d.kpos, d.kdoc, p.Sk, c.bn, d.kbounds);
        dim3 grid((p.Sq + c.rows() - 1) / c.rows(), p.H, p.B);
        c.tma<<<grid, (c.rows() / 64 + 1) * 128, c.shared()>>>(
            tensor_map(d.q, p.D, p.H, p.Sq, p.B, c.rows()), tensor_map(d.k, p.D, p.Hkv, p.Sk, p.B, c.bn),
            tensor_map(d.v, p.D, p.Hkv, p.Sk, p.B, c.bn), d.qpos, d.kpos, d.qdoc, d.kdoc, d.kbounds, o, lse, p.Sq,
            p.Sk, p.H, p.Hkv, p.D, scale, p.kind, p.window);
    } else {
        int tiles = (p.Sk + c.bn - 1) / c.bn;
        ::attention_tile_bounds<<<(tiles + 127) / 128, 128>>>(d.kpos, d.kdoc, p.Sk, c.bn, d.kbounds);
        dim3 grid((p.Sq + c.rows() - 1) / c.rows(), p.H, p.B);
        c.v2<<<grid, c.warps * 32, c.shared()>>>(d.q, d.k, d.v, d.qpos, d.kpos, d.qdoc, d.kdoc, d.kbounds, o, lse,
                                                 p.Sq, p.Sk, p.H, p.Hkv, p.D, scale, p.kind, p.window);
    }
    CHECK(cudaGetLastError());
}

// Max |ours − reference| over O and LSE (rows with LSE = −∞ must match exactly).
static bool check(const Candidate &c, const Problem &p, const char *what, std::mt19937 &rng, bool split) {
    DeviceProblem d = upload(p, rng);
    size_t no = (size_t)p.B * p.Sq * p.H * p.D, nl = (size_t)p.B * p.H * p.Sq;
    float *o, *lse, *ro, *rlse;
    CHECK(cudaMalloc(&o, no * 4)); CHECK(cudaMalloc(&lse, nl * 4));
    CHECK(cudaMalloc(&ro, no * 4)); CHECK(cudaMalloc(&rlse, nl * 4));
    CHECK(cudaMemset(o, 0xff, no * 4));  // NaN poison: unwritten rows fail
    reference_forward<<<dim3((p.Sq + 63) / 64, p.H, p.B), 64>>>(d.q, d.k, d.v, d.qpos, d.kpos, d.qdoc, d.kdoc, ro,
                                                                rlse, p.Sq, p.Sk, p.H, p.Hkv, p.D,
                                                                1.f / sqrtf((float)p.D), p.kind, p.window);
    reset(o, lse, no, nl);
    if (split && p.B == 1) {
        // Fold the keys in two halves: the second launch starts from the first's partial.
        int half = p.Sk / 2;
        Problem first = p, second = p;
        first.Sk = half;
        second.Sk = p.Sk - half;
        DeviceProblem d2 = d;
        d2.k = d.k + (size_t)half * p.Hkv * p.D;
        d2.v = d.v + (size_t)half * p.Hkv * p.D;
        d2.kpos = d.kpos + half;
        d2.kdoc = d.kdoc + half;
        launch(c, first, d, o, lse);
        launch(c, second, d2, o, lse);
    } else {
        launch(c, p, d, o, lse);
    }
    CHECK(cudaDeviceSynchronize());
    std::vector<float> ho(no), hl(nl), rho(no), rhl(nl);
    CHECK(cudaMemcpy(ho.data(), o, no * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(hl.data(), lse, nl * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(rho.data(), ro, no * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(rhl.data(), rlse, nl * 4, cudaMemcpyDeviceToHost));
    double eo = 0, el = 0;
    bool bad = false;
    for (size_t i = 0; i < no; i++) {
        if (!std::isfinite(ho[i])) bad = true;
        eo = std::max(eo, (double)fabsf(ho[i] - rho[i]));
    }
    for (size_t i = 0; i < nl; i++) {
        if (std::isinf(rhl[i]) || std::isinf(hl[i])) {
            if (hl[i] != rhl[i]) bad = true;
        } else {
            el = std::max(el, (double)fabsf(hl[i] - rhl[i]));
        }
    }
    // bf16 P in P·V: |ΔO| ≲ 2⁻⁸·max|V|; LSE is fp32 throughout.
    bool ok = !bad && eo < 2.5e-2 && el < 2e-3;
    printf("check %-28s %-34s maxerr O %.2e LSE %.2e %s\n", c.name.c_str(), what, eo, el, ok ? "ok" : "FAIL");
    for (void *x : {(void *)o, (void *)lse, (void *)ro, (void *)rlse}) CHECK(cudaFree(x));
    release(d);
    return ok;
}

static double time_ms(const Candidate &c, const Problem &p, std::mt19937 &rng, int repeats) {
    DeviceProblem d = upload(p, rng);
    size_t no = (size_t)p.B * p.Sq * p.H * p.D, nl = (size_t)p.B * p.H * p.Sq;
    float *o, *lse;
    CHECK(cudaMalloc(&o, no * 4)); CHECK(cudaMalloc(&lse, nl * 4));
    cudaEvent_t start, end;
    CHECK(cudaEventCreate(&start)); CHECK(cudaEventCreate(&end));
    std::vector<float> times;
    for (int r = 0; r <= repeats; r++) {
        reset(o, lse, no, nl);
        CHECK(cudaEventRecord(start));
        launch(c, p, d, o, lse);
        CHECK(cudaEventRecord(end));
        CHECK(cudaEventSynchronize(end));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, start, end));
        if (r > 0) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    CHECK(cudaFree(o)); CHECK(cudaFree(lse));
    release(d);
    return times[times.size() / 2];
}

int main(int argc, char **argv) {
    std::string mode = argc > 1 ? argv[1] : "", only, skip;
    bool quick = mode == "--quick";
    for (int a = 1; a < argc; a++) {  // --only=TEXT / --skip=TEXT: candidates by name (common.cuh)
        std::string arg = argv[a];
        if (arg.rfind("--only=", 0) == 0) only = arg.substr(7);
        if (arg.rfind("--skip=", 0) == 0) skip = arg.substr(7);
    }
    using namespace mainline;
    std::vector<Candidate> candidates = {
        {"v1 d64 64x64", 64, 4, 1, 64, nullptr, (ForwardV1)v1::lab_forward_v1_d64},
        {"v1 d128 64x64", 128, 4, 1, 64, nullptr, (ForwardV1)v1::lab_forward_v1_d128},
#define CANDIDATE(D, W, M, N, S) \
    {"v2 d" #D " w" #W " m" #M " n" #N #S, D, W, M, N, (ForwardV2)attention_forward_mma_d##D##_w##W##_m##M##_n##N##S, nullptr}
        CANDIDATE(64, 4, 2, 128, ), CANDIDATE(128, 4, 2, 64, ),
        CANDIDATE(64, 4, 2, 64, ),
#define WGMMA(NAME, D, KERNEL) {NAME, D, 8, 1, 128, nullptr, nullptr, (size_t)(128 + 4 * 128) * D * 2 + 1024, \
                  (ForwardTMA)KERNEL}
        WGMMA("wgmma d64 n128", 64, attention_forward_wgmma_d64),
        WGMMA("wgmma d128 n128", 128, attention_forward_wgmma_d128),
    };
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(), [&](const Candidate &c) {
        return (!only.empty() && !names_any(c.name, only)) || names_any(c.name, skip);
    }), candidates.end());
    for (auto &c : candidates)
        if (c.v2 || c.tma)
            CHECK(cudaFuncSetAttribute(c.v2 ? (const void *)c.v2 : (const void *)c.tma,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c.shared()));
    std::mt19937 rng(2026);
    if (mode == "--profile") {  // one timed case per candidate, for ncu (lab/profile.sh)
        for (auto &c : candidates)
            if (!c.v1 && c.D == 128 && c.name.find("alt") == std::string::npos)  // alt readings may fault
                time_ms(c, make_problem(1, 16384, 32, 32, 128, 0, 0), rng, 1);
        return 0;
    }
    int failures = 0;
    for (auto &c : candidates) {
        if (quick && c.v1) continue;
        int D = c.D;
        failures += !check(c, make_problem(1, 1000, 6, 2, D, 0, 0), "causal S=1000 H=6/2", rng, false);
        failures += !check(c, make_problem(2, 97, 8, 1, D, 1, 0), "full B=2 S=97 H=8/1", rng, false);
        failures += !check(c, make_problem(1, 1, 2, 2, D, 0, 0), "causal S=1", rng, false);
        failures += !check(c, make_problem(1, 777, 4, 2, D, 2, 100), "window=100 S=777", rng, false);
        failures += !check(c, make_problem(1, 1025, 4, 4, D, 0, 0, {1, 500, 524}), "docs 1,500,524 causal", rng, false);
        failures += !check(c, make_problem(1, 300, 2, 1, D, 1, 0, {150, 150}), "docs 150,150 full", rng, false);
        failures += !check(c, make_problem(1, 1003, 4, 2, D, 0, 0), "causal S=1003 split keys", rng, true);
        failures += !check(c, make_problem(1, 513, 2, 2, D, 0, 0, {}, 3, 1), "causal strided positions", rng, false);
    }
    printf("correctness: %d failures\n", failures);
    printf("\nname,mask,S,ms,tflops\n");
    std::vector<int> sizes = quick ? std::vector<int>{16384} : std::vector<int>{4096, 8192, 16384, 32768, 65536};
    for (auto &c : candidates)
        if (!(quick && c.v1))
        for (int kind : {0, 1})
            for (int S : sizes) {
                if ((c.D == 64 || c.v1) && S != 16384 && S != 32768) continue;
                Problem p = make_problem(1, S, 32, 32, c.D, kind, 0);
                double ms = time_ms(c, p, rng, 10);
                double flops = 4.0 * S * (double)S * 32 * c.D / (kind == 0 ? 2 : 1);
                printf("%s,%s,%d,%.3f,%.1f\n", c.name.c_str(), kind == 0 ? "causal" : "full", S, ms,
                       flops / ms / 1e9);
                fflush(stdout);
            }
    return failures ? 1 : 0;
}
