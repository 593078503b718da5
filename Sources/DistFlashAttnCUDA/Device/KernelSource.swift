/// Kernel sources as NVRTC sees them. The `.cu` files share `mma_primitives.cuh`, `wgmma_primitives.cuh`,
/// `tma_primitives.cuh` and `input_type.cuh` through `#include` lines (which nvcc in the kernel lab resolves
/// itself); NVRTC gets one self-contained text with each header spliced in once, at its first `#include`.
enum KernelSource {
    static let headers = ["mma_primitives.cuh": PackageResources.mma_primitives_cuh,
                          "wgmma_primitives.cuh": PackageResources.wgmma_primitives_cuh,
                          "tma_primitives.cuh": PackageResources.tma_primitives_cuh,
                          "input_type.cuh": PackageResources.input_type_cuh]

    /// `source` for kernels on `inputs` (bf16 or fp16): fp16 compiles with DISTFLASH_INPUT_F16 defined, a module
    /// of its own with the same kernel names.
    static func forInputs(_ source: String, _ inputs: DeviceTensor.Precision) -> String {
        inputs == .float16 ? "#define DISTFLASH_INPUT_F16\n" + source : source
    }

    static func splicing(_ bytes: [UInt8]) -> String {
        var spliced: Set<String> = []
        return splicing(bytes, into: &spliced)
    }

    /// `bytes` with its header `#include` lines replaced by the headers' own splicing, skipping headers already in
    /// `spliced` (the headers' `#pragma once`, which NVRTC cannot apply to text that is not a file).
    private static func splicing(_ bytes: [UInt8], into spliced: inout Set<String>) -> String {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map { line in
            for (name, header) in headers where line == "#include \"\(name)\"" {
                return spliced.insert(name).inserted ? splicing(header, into: &spliced) : ""
            }
            return String(line)
        }.joined(separator: "\n")
    }
}
