import DistFlashAttn

/// cuBLASLt, loaded at run time (`DISTFLASH_LIBCUBLASLT` overrides the path): the products whose addend C is not
/// their output D (D = op(A)·op(B) + C), which `cublasGemmEx` cannot express. Only the calls used; the enum values
/// are CUDA's (CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4,
/// CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1; data and compute types as in `CUBLAS`).
struct CUBLASLt: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Status = Int32
    typealias Handle = OpaquePointer?
    static let transposeAAttribute: Int32 = 3
    static let transposeBAttribute: Int32 = 4
    static let maxWorkspacePreference: Int32 = 1

    /// cublasLtMatmulHeuristicResult_t: the algorithm (cublasLtMatmulAlgo_t, 8 × 64 bits), its workspace bytes,
    /// status, waves and reserved words — 96 bytes.
    struct HeuristicResult {
        var algorithm: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        var workspaceBytes: Int = 0
        var state: Int32 = 0
        var waves: Float = 0
        var reserved: (Int32, Int32, Int32, Int32) = (0, 0, 0, 0)
    }

    let library: DynamicLibrary
    let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasLtDestroy: @convention(c) (Handle) -> Status
    let cublasLtGetStatusString: @convention(c) (Status) -> UnsafePointer<CChar>?
    /// (descriptor, compute type, scale type)
    let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, Int32) -> Status
    let cublasLtMatmulDescDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    /// (layout, data type, rows, columns, leading dimension): column-major
    let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, UInt64, UInt64, Int64)
        -> Status
    let cublasLtMatrixLayoutDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasLtMatmulPreferenceDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    /// (handle, descriptor, A, B, C, D layouts, preference, results wanted, results (`HeuristicResult`s), results
    /// returned)
    let cublasLtMatmulAlgoGetHeuristic: @convention(c) (Handle, Handle, Handle, Handle, Handle, Handle, Handle, Int32,
                                                        UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Status
    /// (handle, descriptor, α, A, A layout, B, B layout, β, C, C layout, D, D layout, algorithm, workspace,
    /// workspace bytes, stream)
    let cublasLtMatmul: @convention(c) (Handle, Handle, UnsafeRawPointer, UInt64, Handle, UInt64, Handle,
                                        UnsafeRawPointer, UInt64, Handle, UInt64, Handle, UnsafeRawPointer?, UInt64,
                                        Int, OpaquePointer?) -> Status

    init() throws {
        guard MemoryLayout<HeuristicResult>.size == 96 else {
            throw DistFlashError(.runtime, "cuBLASLt's heuristic result is 96 bytes; this build lays it out in "
                + "\(MemoryLayout<HeuristicResult>.size)")
        }
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
        cublasLtMatmulPreferenceCreate = try library.symbol("cublasLtMatmulPreferenceCreate")
        cublasLtMatmulPreferenceDestroy = try library.symbol("cublasLtMatmulPreferenceDestroy")
        cublasLtMatmulPreferenceSetAttribute = try library.symbol("cublasLtMatmulPreferenceSetAttribute")
        cublasLtMatmulAlgoGetHeuristic = try library.symbol("cublasLtMatmulAlgoGetHeuristic")
    }

    func check(_ status: Status, _ call: String) throws {
        guard status != 0 else { return }
        let text = cublasLtGetStatusString(status).map { String(cString: $0) } ?? "cuBLASLt status \(status)"
        throw DistFlashError(.runtime, "\(call) failed: \(text)")
    }
}
