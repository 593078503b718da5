@testable import DistFlashAttnCUDA
import Testing

/// NVRTC compiles one self-contained text per kernel file; these run without a GPU.
@Suite("Kernel sources")
struct KernelSourceTests {
    @Test("every header is spliced in exactly once, however many files include it")
    func headersOnce() {
        // The wgmma kernels include wgmma_primitives.cuh, which includes mma_primitives.cuh again.
        #expect(!AttentionKernels.simt.contains("#include \""))
        for source in Array(AttentionKernels.forward.values) + AttentionKernels.backward.values {
            #expect(!source.contains("#include \""), "an #include line is left for NVRTC")
            let primitives = source.components(separatedBy: "__device__ __forceinline__ u32 shared_address(").count - 1
            #expect(primitives == 1, "mma_primitives.cuh spliced \(primitives) times")
        }
        for wgmma in [AttentionKernels.forward[.wgmma]!, AttentionKernels.backward[.wgmma]!] {
            #expect(wgmma.components(separatedBy: "u64 smem_descriptor(").count - 1 == 1)
        }
    }
}
