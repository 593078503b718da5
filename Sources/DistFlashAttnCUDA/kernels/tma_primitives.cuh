// Hopper's asynchronous data movement (sm_90a): Tensor Memory Accelerator loads that complete on shared-memory
// mbarriers, and the register hand-over between warpgroups of different roles. Shared by producer/consumer kernels.
#pragma once

// u64, shared_address
#include "wgmma_primitives.cuh"

// A CUtensorMap (opaque, 128 bytes, 64-byte aligned; made on the host by cuTensorMapEncodeTiled), passed by value
// as a __grid_constant__ kernel parameter so TMA reads it from the parameter space.
struct __align__(64) TensorMap { unsigned long long opaque[16]; };

__device__ __forceinline__ void mbar_init(u64 *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(shared_address(bar)), "r"(count) : "memory");
}
// Makes initialised mbarriers visible to the async proxy (TMA's completions) before any use.
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// The producer's arrival, announcing `bytes` of TMA transactions that complete the phase.
__device__ __forceinline__ void mbar_expect(u64 *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(shared_address(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64 *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(shared_address(bar)) : "memory");
}
// Spins until the phase with parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(u64 *bar, unsigned parity) {
    asm volatile("{\n.reg .pred done;\nwait_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra wait_%=;\n}\n" :: "r"(shared_address(bar)), "r"(parity) : "memory");
}
// TMA: the box at coordinates (c0, c1, c2, c3) of `map` into shared memory at `destination`, completing on `bar`.
__device__ __forceinline__ void tma_load_4d(void *destination, const TensorMap *map, int c0, int c1, int c2, int c3,
                                            u64 *bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];"
                 :: "r"(shared_address(destination)), "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
                    "r"(shared_address(bar)) : "memory");
}
// A warpgroup's register budget, raised or lowered (takes effect only within the kernel's own register cap, so
// the callers are inlined into their kernels).
template <int REGISTERS> __device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(REGISTERS));
}
template <int REGISTERS> __device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(REGISTERS));
}

// Adds `bytes` (a multiple of 16) of fp32 from shared memory into global memory (both 16-byte aligned) as one bulk
// reduction, performed in L2 by the copy engine; completes in the issuing thread's bulk group.
__device__ __forceinline__ void bulk_reduce_add_f32(float *global, const void *shared, unsigned bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
                 :: "l"(global), "r"(shared_address(shared)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// Until every committed bulk group of this thread has read its shared-memory source (which may then be rewritten).
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
// Until every committed bulk group of this thread has completed.
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
