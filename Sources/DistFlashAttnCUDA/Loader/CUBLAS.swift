import DistFlashAttn

/// cuBLAS, loaded at run time (`DISTFLASH_LIBCUBLAS` overrides the path): the GEMMs of training. Only the calls
/// used; the enum values are CUDA's (CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14, CUBLAS_COMPUTE_32F = 68,
/// CUBLAS_GEMM_DEFAULT = −1, CUBLAS_OP_N = 0, CUBLAS_OP_T = 1).
struct CUBLAS: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Status = Int32
    typealias Handle = OpaquePointer?
    static let float32: Int32 = 0
    static let float16: Int32 = 2
    static let bfloat16: Int32 = 14
    static let compute32F: Int32 = 68
    static let defaultAlgorithm: Int32 = -1
    static let noTranspose: Int32 = 0
    static let transpose: Int32 = 1

    /// cuBLAS's data type for a tensor's elements.
    static func type(_ precision: DeviceTensor.Precision) -> Int32 {
        switch precision {
        case .float32: float32
        case .bfloat16: bfloat16
        case .float16: float16
        }
    }

    let library: DynamicLibrary
    let cublasCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasDestroy: @convention(c) (Handle) -> Status
    let cublasSetStream: @convention(c) (Handle, OpaquePointer?) -> Status
    let cublasGetVersion: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Status
    let cublasGetStatusString: @convention(c) (Status) -> UnsafePointer<CChar>?
    /// (handle, transa, transb, m, n, k, α, A, Atype, lda, B, Btype, ldb, β, C, Ctype, ldc, compute type, algorithm)
    let cublasGemmEx: @convention(c) (Handle, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer, UInt64, Int32, Int32,
                                      UInt64, Int32, Int32, UnsafeRawPointer, UInt64, Int32, Int32, Int32, Int32) -> Status

    init() throws {
        library = try DynamicLibrary(
            "cuBLAS (libcublas)",
            candidates: ["libcublas.so", "libcublas.so.13", "libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so"],
            environment: "DISTFLASH_LIBCUBLAS")
        cublasCreate = try library.symbol("cublasCreate_v2")
        cublasDestroy = try library.symbol("cublasDestroy_v2")
        cublasSetStream = try library.symbol("cublasSetStream_v2")
        cublasGetVersion = try library.symbol("cublasGetVersion_v2")
        cublasGetStatusString = try library.symbol("cublasGetStatusString")
        cublasGemmEx = try library.symbol("cublasGemmEx")
    }

    func check(_ status: Status, _ call: String) throws {
        guard status != 0 else { return }
        let text = cublasGetStatusString(status).map { String(cString: $0) } ?? "cuBLAS status \(status)"
        throw DistFlashError(.runtime, "\(call) failed: \(text)")
    }
}
