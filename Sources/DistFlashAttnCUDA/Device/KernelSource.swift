/// Kernel sources as NVRTC sees them. The `.cu` files share `mma_primitives.cuh` and `input_type.cuh` through
/// `#include` lines (which nvcc in the kernel lab resolves itself); NVRTC gets one self-contained text with the
/// headers spliced in.
enum KernelSource {
    static let headers = ["mma_primitives.cuh": String(decoding: PackageResources.mma_primitives_cuh, as: UTF8.self),
                          "input_type.cuh": String(decoding: PackageResources.input_type_cuh, as: UTF8.self)]

    /// `source` for kernels on `inputs` (bf16 or fp16): fp16 compiles with DISTFLASH_INPUT_F16 defined, a module
    /// of its own with the same kernel names.
    static func forInputs(_ source: String, _ inputs: DeviceTensor.Precision) -> String {
        inputs == .float16 ? "#define DISTFLASH_INPUT_F16\n" + source : source
    }

    static func splicing(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map { line in
            for (name, text) in headers where line == "#include \"\(name)\"" { return text }
            return String(line)
        }.joined(separator: "\n")
    }
}
