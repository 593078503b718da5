@testable import DistFlashAttnCUDA
import Testing

/// NVRTC compiles one self-contained text per kernel file; these run without a GPU.
@Suite("Kernel sources")
struct KernelSourceTests {
    @Test("every header is spliced in exactly once, however many files include it")
    func headersOnce() {
        // attention_backward_wgmma.cu includes wgmma_primitives.cuh, which includes mma_primitives.cuh again.
        #expect(!AttentionKernels.simt.contains("#include \""))
        for source in [AttentionKernels.forward] + AttentionKernels.backward.values {
            #expect(!source.contains("#include \""), "an #include line is left for NVRTC")
            let primitives = source.components(separatedBy: "__device__ __forceinline__ u32 shared_address(").count - 1
            #expect(primitives == 1, "mma_primitives.cuh spliced \(primitives) times")
        }
        let wgmma = AttentionKernels.backward[.wgmma]!
        #expect(wgmma.components(separatedBy: "u64 smem_descriptor(").count - 1 == 1)
    }
}
