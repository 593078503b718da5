// The wgmma probes (lab/wgmma/) on the GPU, each case in a child process of its own (a wrong descriptor can read
// out of bounds, and the illegal address would end every later case in the same context):
//  1. K-major descriptors for A and B, D = A·Bᵀ: which reading of the leading / stride byte offsets is right for
//     two physical arrangements of the core matrices, and whether the accumulator layout we assume is (values in
//     place) or only the set of values is (layout wrong, descriptors right). Confirmed on H100 (2026-11-27).
//  2. B read transposed (MN-major, as V [keys][D] for O += P·V), both readings of LBO / SBO.
//  3. A from registers (as P from the accumulators of S), B K-major.
//  4. The 128-byte swizzle, K-major A and B over K = 64 (four steps): readings of LBO / SBO.
//  5. The 128-byte swizzle with B read transposed (as V): readings of LBO / SBO.
// Exit status 0 when 1 holds for both arrangements and 2 and 3 each have a reading that is right in place (4 and
// 5 are reported, not required: the kernels do not use the swizzle yet).
#include <sys/wait.h>
#include <unistd.h>

#include "common.cuh"
#include "../wgmma/probe_m64n64k16.cu"
#include "../wgmma/probe_pv_operands.cu"
#include "../wgmma/probe_swizzle.cu"

struct Inputs {
    std::vector<bf16> a, b;     // a [64 × K] (m, k); b [64 × K] (n, k) or [K × 64] (k, n)
    std::vector<double> want;   // D [64 × 64]
};

// A [64 × K] (m, k) and B [64 × K] (n, k) or [K × 64] (k, n), with D = A·B over K (16: one k16 step; 64: the
// swizzle probes' four). Fixed seeds: every probe run sees the same inputs.
static Inputs inputs(int K, bool b_is_k_by_n) {
    std::mt19937 rng(K == 16 ? 7 : 11);
    std::normal_distribution<float> normal;
    Inputs in{std::vector<bf16>(64 * K), std::vector<bf16>(64 * K), std::vector<double>(64 * 64)};
    for (auto &x : in.a) x = to_bf16(normal(rng));
    for (auto &x : in.b) x = to_bf16(normal(rng));
    for (int m = 0; m < 64; ++m)
        for (int n = 0; n < 64; ++n) {
            double sum = 0;
            for (int k = 0; k < K; ++k)
                sum += (double)from_bf16(in.a[m * K + k]) * from_bf16(b_is_k_by_n ? in.b[k * 64 + n] : in.b[n * K + k]);
            in.want[m * 64 + n] = sum;
        }
    return in;
}

// Runs `launch(a, b, d)` on fresh device copies and prints one table row: how many of D's values are right in
// place, and how many are right as a set. Returns whether all are in place.
template <class Launch>
static bool check(const Inputs &in, const char *label, Launch launch) {
    bf16 *da, *db;
    float *dd;
    CHECK(cudaMalloc(&da, in.a.size() * 2));
    CHECK(cudaMalloc(&db, in.b.size() * 2));
    CHECK(cudaMalloc(&dd, 64 * 64 * 4));
    CHECK(cudaMemcpy(da, in.a.data(), in.a.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, in.b.data(), in.b.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dd, 0, 64 * 64 * 4));
    launch(da, db, dd);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<float> got(64 * 64);
    CHECK(cudaMemcpy(got.data(), dd, got.size() * 4, cudaMemcpyDeviceToHost));
    int in_place = 0;
    for (int i = 0; i < 64 * 64; ++i) in_place += fabs(got[i] - in.want[i]) <= 1e-4 * (1 + fabs(in.want[i]));
    std::vector<double> g(got.begin(), got.end()), w = in.want;
    std::sort(g.begin(), g.end());
    std::sort(w.begin(), w.end());
    int same = 0;
    for (int i = 0; i < 64 * 64; ++i) same += fabs(g[i] - w[i]) <= 1e-4 * (1 + fabs(w[i]));
    printf("| %s | %d / 4096 | %d / 4096 |\n", label, in_place, same);
    fflush(stdout);
    return in_place == 4096;
}

// `body` in a child process (CUDA is first touched there): true when all of D is in place. The child exits 0 (in
// place) or 2 (wrong, its row printed); anything else — CHECK's exit 1 on a CUDA error such as an illegal
// address, or a crash — gets a row here.
template <class Body>
static bool isolated(const char *label, Body body) {
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) _exit(body() ? 0 : 2);
    int status = 0;
    waitpid(child, &status, 0);
    const bool printed = WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 2);
    if (!printed) printf("| %s | failed (CUDA error: see above) | |\n", label);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main() {
    struct Case { unsigned stride_mn, stride_k, lbo, sbo; };
    // Two arrangements (K-neighbours adjacent; M/N-neighbours adjacent), each read both ways.
    const Case cases[] = {{256, 128, 128, 256}, {256, 128, 256, 128}, {128, 1024, 1024, 128}, {128, 1024, 128, 1024}};
    const Inputs nk = inputs(16, false), kn = inputs(16, true);
    char label[160];

    printf("1. K-major A and B\n\n| core matrix stride M/N, stride K, LBO, SBO | in place | same values |\n|---|---|---|\n");
    bool arrangement_ok[2] = {false, false};
    for (int c = 0; c < 4; ++c) {
        const Case t = cases[c];
        snprintf(label, sizeof label, "%u, %u, %u, %u", t.stride_mn, t.stride_k, t.lbo, t.sbo);
        arrangement_ok[c / 2] |= isolated(label, [&] {
            return check(nk, label, [&](bf16 *a, bf16 *b, float *d) {
                wgmma_probe<<<1, 128>>>(a, b, d, t.stride_mn, t.stride_k, t.lbo, t.sbo);
            });
        });
    }

    printf("\n2. B transposed (MN-major), A K-major\n\n| core matrix stride N, stride K, LBO, SBO | in place | same values |\n|---|---|---|\n");
    bool transposed_ok = false;
    for (const Case t : cases) {
        snprintf(label, sizeof label, "%u, %u, %u, %u", t.stride_mn, t.stride_k, t.lbo, t.sbo);
        transposed_ok |= isolated(label, [&] {
            return check(kn, label, [&](bf16 *a, bf16 *b, float *d) {
                wgmma_probe_trans_b<<<1, 128>>>(a, b, d, t.stride_mn, t.stride_k, t.lbo, t.sbo);
            });
        });
    }

    printf("\n3. A from registers, B K-major\n\n| case | in place | same values |\n|---|---|---|\n");
    const bool registers_ok = isolated("A fragments as mma.m16n8k16's, per warp 16 rows", [&] {
        return check(kn, "A fragments as mma.m16n8k16's, per warp 16 rows", [&](bf16 *a, bf16 *b, float *d) {
            wgmma_probe_register_a<<<1, 128>>>(a, b, d);
        });
    });

    const Inputs nk64 = inputs(64, false), kn64 = inputs(64, true);
    const unsigned readings[][2] = {{16, 1024}, {1024, 16}, {1024, 1024}, {8192, 1024}};
    printf("\n4. 128-byte swizzle, K-major A and B, K = 64\n\n| LBO, SBO | in place | same values |\n|---|---|---|\n");
    for (const auto &r : readings) {
        snprintf(label, sizeof label, "%u, %u", r[0], r[1]);
        isolated(label, [&] {
            return check(nk64, label, [&](bf16 *a, bf16 *b, float *d) { wgmma_probe_swizzled<<<1, 128>>>(a, b, d, r[0], r[1]); });
        });
    }
    printf("\n5. 128-byte swizzle, B transposed (MN-major), K = 64\n\n| LBO, SBO | in place | same values |\n|---|---|---|\n");
    for (const auto &r : readings) {
        snprintf(label, sizeof label, "%u, %u", r[0], r[1]);
        isolated(label, [&] {
            return check(kn64, label, [&](bf16 *a, bf16 *b, float *d) {
                wgmma_probe_swizzled_trans_b<<<1, 128>>>(a, b, d, r[0], r[1]);
            });
        });
    }

    const bool ok = arrangement_ok[0] && arrangement_ok[1] && transposed_ok && registers_ok;
    printf("\nwgmma probes: %s\n", ok ? "all confirmed" : "NOT all confirmed (see the tables)");
    return ok ? 0 : 1;
}
