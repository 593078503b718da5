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
            #expect(wgmma.components(separatedBy: "struct __align__(64) TensorMap").count - 1 == 1)
        }
    }
}

/// Kernel arguments are copied by the driver from one host buffer; a tensor map (128 bytes) must sit at a
/// 64-byte boundary there, as in the kernel's parameter space.
@Suite("Kernel arguments")
struct KernelArgumentTests {
    @Test("scalars take 8-byte slots, tensor maps 128 bytes at 64-byte boundaries")
    func packing() {
        let map = CUDADevice.Argument.tensorMap(TensorMap(words: Array(repeating: 0, count: 16)))
        let packed = CUDADevice.Argument.packing([.pointer(1), .int(2), map, .float(3), map, .int64(4)])
        #expect(packed.offsets == [0, 8, 64, 192, 256, 384])
        #expect(packed.size == 392)
        #expect(CUDADevice.Argument.packing([]).size == 0)
    }
}
