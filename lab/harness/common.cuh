// Pieces the lab harnesses share: error checks, bf16 conversion, problems with positions and documents, uploads,
// and the naive fp32 GPU reference forward.
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#define CHECK(call)                                                                                      \
    do {                                                                                                 \
        cudaError_t e = (call);                                                                          \
        if (e != cudaSuccess) {                                                                          \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e));         \
            exit(1);                                                                                     \
        }                                                                                                \
    } while (0)

typedef unsigned short bf16;

static bf16 to_bf16(float x) {
    unsigned u;
    memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (bf16)(u >> 16);
}
static float from_bf16(bf16 x) {
    unsigned u = (unsigned)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// One thread per (row, head, batch): two passes over the keys in fp32.
__global__ void reference_forward(const bf16 *q, const bf16 *k, const bf16 *v, const int *qpos, const int *kpos,
                                  const int *qdoc, const int *kdoc, float *o, float *lse, int Sq, int Sk, int H,
                                  int Hkv, int D, float scale, int kind, int window) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= Sq) return;
    int kvh = h / (H / Hkv);
    auto see = [&](int j) {
        if (qdoc[i] != kdoc[j]) return false;
        if (kind == 1) return true;
        return kpos[j] <= qpos[i] && (kind != 2 || kpos[j] > qpos[i] - window);
    };
    auto score = [&](int j) {
        float s = 0;
        for (int d = 0; d < D; d++)
            s += __uint_as_float((unsigned)q[((size_t)(b * Sq + i) * H + h) * D + d] << 16)
                 * __uint_as_float((unsigned)k[((size_t)(b * Sk + j) * Hkv + kvh) * D + d] << 16);
        return s * scale;
    };
    float m = -INFINITY;
    for (int j = 0; j < Sk; j++)
        if (see(j)) m = fmaxf(m, score(j));
    float l = 0;
    float *out = o + ((size_t)(b * Sq + i) * H + h) * D;
    for (int d = 0; d < D; d++) out[d] = 0;
    for (int j = 0; j < Sk; j++) {
        if (!see(j)) continue;
        float p = expf(score(j) - m);
        l += p;
        for (int d = 0; d < D; d++)
            out[d] += p * __uint_as_float((unsigned)v[((size_t)(b * Sk + j) * Hkv + kvh) * D + d] << 16);
    }
    for (int d = 0; d < D; d++) out[d] = l > 0 ? out[d] / l : 0;
    lse[((size_t)b * H + h) * Sq + i] = l > 0 ? m + logf(l) : -INFINITY;
}

struct Problem {
    int B, Sq, Sk, H, Hkv, D, kind, window;
    std::vector<int> qpos, kpos, qdoc, kdoc;
};

template <class T> T *device_copy(const std::vector<T> &host) {
    T *p;
    CHECK(cudaMalloc(&p, std::max<size_t>(1, host.size()) * sizeof(T)));
    CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}

struct DeviceProblem {
    bf16 *q, *k, *v;
    int *qpos, *kpos, *qdoc, *kdoc;
    int4 *kbounds, *qbounds;
};

static DeviceProblem upload(const Problem &p, std::mt19937 &rng) {
    std::normal_distribution<float> normal;
    auto random = [&](size_t n) {
        std::vector<bf16> x(n);
        for (auto &e : x) e = to_bf16(normal(rng));
        return x;
    };
    DeviceProblem d;
    d.q = device_copy(random((size_t)p.B * p.Sq * p.H * p.D));
    d.k = device_copy(random((size_t)p.B * p.Sk * p.Hkv * p.D));
    d.v = device_copy(random((size_t)p.B * p.Sk * p.Hkv * p.D));
    d.qpos = device_copy(p.qpos); d.kpos = device_copy(p.kpos);
    d.qdoc = device_copy(p.qdoc); d.kdoc = device_copy(p.kdoc);
    CHECK(cudaMalloc(&d.kbounds, ((p.Sk + 31) / 32 + 1) * sizeof(int4)));
    CHECK(cudaMalloc(&d.qbounds, ((p.Sq + 31) / 32 + 1) * sizeof(int4)));
    return d;
}

static void release(DeviceProblem &d) {
    for (void *p : {(void *)d.q, (void *)d.k, (void *)d.v, (void *)d.qpos, (void *)d.kpos, (void *)d.qdoc,
                    (void *)d.kdoc, (void *)d.kbounds,
                    (void *)d.qbounds})
        CHECK(cudaFree(p));
}

static void reset(float *o, float *lse, size_t no, size_t nl) {
    CHECK(cudaMemset(o, 0, no * 4));
    std::vector<float> minus(nl, -INFINITY);
    CHECK(cudaMemcpy(lse, minus.data(), nl * 4, cudaMemcpyHostToDevice));
}

// --only=A|B / --skip=A|B: whether a candidate's name contains any of the '|'-separated texts (empty: none).
static bool names_any(const std::string &name, const std::string &texts) {
    size_t start = 0;
    while (start <= texts.size() && !texts.empty()) {
        size_t end = texts.find('|', start);
        if (end == std::string::npos) end = texts.size();
        if (end > start && name.find(texts.substr(start, end - start)) != std::string::npos) return true;
        start = end + 1;
    }
    return false;
}

static Problem make_problem(int B, int S, int H, int Hkv, int D, int kind, int window, std::vector<int> docs = {},
                            int stride = 1, int offset = 0) {
    Problem p{B, S, S, H, Hkv, D, kind, window};
    for (int i = 0; i < S; i++) {
        p.qpos.push_back(i * stride + offset);
        p.kpos.push_back(i * stride);
    }
    int doc = 0, left = docs.empty() ? S : docs[0];
    for (int i = 0; i < S; i++) {
        while (left == 0) left = docs[++doc];
        p.qdoc.push_back(doc);
        p.kdoc.push_back(doc);
        left--;
    }
    return p;
}

