import DistFlashAttn

/// cuBLASLt, loaded at run time (`DISTFLASH_LIBCUBLASLT` overrides the path): the products whose addend C is not
/// their output D (D = op(A)·op(B) + C), which `cublasGemmEx` cannot express. Only the calls used; the enum values
/// are CUDA's (CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4; data and compute types as in
/// `CUBLAS`).
struct CUBLASLt: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Status = Int32
    typealias Handle = OpaquePointer?
    static let transposeAAttribute: Int32 = 3
    static let transposeBAttribute: Int32 = 4

    let library: DynamicLibrary
    let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasLtDestroy: @convention(c) (Handle) -> Status
    let cublasLtGetStatusString: @convention(c) (Status) -> UnsafePointer<CChar>?
    /// (descriptor, compute type, scale type)
    let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, Int32) -> Status
    let cublasLtMatmulDescDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    /// (layout, data type, rows, columns, leading dimension): column-major
    let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, UInt64, UInt64, Int64) -> Status
    let cublasLtMatrixLayoutDestroy: @convention(c) (Handle) -> Status
    /// (handle, descriptor, α, A, A layout, B, B layout, β, C, C layout, D, D layout, algorithm (nil: cuBLASLt's
    /// heuristic), workspace, workspace bytes, stream)
    let cublasLtMatmul: @convention(c) (Handle, Handle, UnsafeRawPointer, UInt64, Handle, UInt64, Handle,
                                        UnsafeRawPointer, UInt64, Handle, UInt64, Handle, UnsafeRawPointer?, UInt64,
                                        Int, OpaquePointer?) -> Status

    init() throws {
        library = try DynamicLibrary(
            "cuBLASLt (libcublasLt)",
            candidates: ["libcublasLt.so", "libcublasLt.so.13", "libcublasLt.so.12",
                         "/usr/local/cuda/lib64/libcublasLt.so"],
            environment: "DISTFLASH_LIBCUBLASLT")
        cublasLtCreate = try library.symbol("cublasLtCreate")
        cublasLtDestroy = try library.symbol("cublasLtDestroy")
        cublasLtGetStatusString = try library.symbol("cublasLtGetStatusString")
        cublasLtMatmulDescCreate = try library.symbol("cublasLtMatmulDescCreate")
        cublasLtMatmulDescDestroy = try library.symbol("cublasLtMatmulDescDestroy")
        cublasLtMatmulDescSetAttribute = try library.symbol("cublasLtMatmulDescSetAttribute")
        cublasLtMatrixLayoutCreate = try library.symbol("cublasLtMatrixLayoutCreate")
        cublasLtMatrixLayoutDestroy = try library.symbol("cublasLtMatrixLayoutDestroy")
        cublasLtMatmul = try library.symbol("cublasLtMatmul")
    }

    func check(_ status: Status, _ call: String) throws {
        guard status != 0 else { return }
        let text = cublasLtGetStatusString(status).map { String(cString: $0) } ?? "cuBLASLt status \(status)"
        throw DistFlashError(.runtime, "\(call) failed: \(text)")
    }
}
