import DistFlashAttn

/// NCCL, loaded at run time (`DISTFLASH_LIBNCCL` overrides the path). Only the calls the communicator uses; the
/// enum values are NCCL's (ncclFloat32 = 7, ncclSum = 0, ncclInProgress = 7).
struct NCCL: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Result = Int32
    typealias Comm = OpaquePointer?
    typealias Stream = OpaquePointer?
    static let float32: Int32 = 7
    static let sum: Int32 = 0
    static let inProgress: Result = 7

    let library: DynamicLibrary
    let ncclGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let ncclCommInitAll: @convention(c) (UnsafeMutablePointer<Comm>, Int32, UnsafePointer<Int32>?) -> Result
    let ncclCommAbort: @convention(c) (Comm) -> Result
    let ncclCommDestroy: @convention(c) (Comm) -> Result
    let ncclCommGetAsyncError: @convention(c) (Comm, UnsafeMutablePointer<Result>) -> Result
    let ncclGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?
    let ncclGroupStart: @convention(c) () -> Result
    let ncclGroupEnd: @convention(c) () -> Result
    let ncclSend: @convention(c) (UInt64, Int, Int32, Int32, Comm, Stream) -> Result
    let ncclRecv: @convention(c) (UInt64, Int, Int32, Int32, Comm, Stream) -> Result
    let ncclAllReduce: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Comm, Stream) -> Result

    init() throws {
        library = try DynamicLibrary("NCCL (libnccl)", candidates: ["libnccl.so.2", "libnccl.so"],
                                     environment: "DISTFLASH_LIBNCCL")
        ncclGetVersion = try library.symbol("ncclGetVersion")
        ncclCommInitAll = try library.symbol("ncclCommInitAll")
        ncclCommAbort = try library.symbol("ncclCommAbort")
        ncclCommDestroy = try library.symbol("ncclCommDestroy")
        ncclCommGetAsyncError = try library.symbol("ncclCommGetAsyncError")
        ncclGetErrorString = try library.symbol("ncclGetErrorString")
        ncclGroupStart = try library.symbol("ncclGroupStart")
        ncclGroupEnd = try library.symbol("ncclGroupEnd")
        ncclSend = try library.symbol("ncclSend")
        ncclRecv = try library.symbol("ncclRecv")
        ncclAllReduce = try library.symbol("ncclAllReduce")
    }

    /// e.g. "2.28.3"
    var version: String {
        var code: Int32 = 0
        _ = ncclGetVersion(&code)
        return "\(code / 10000).\(code / 100 % 100).\(code % 100)"
    }

    func check(_ result: Result, _ call: String) throws {
        guard result != 0 else { return }
        let text = ncclGetErrorString(result).map { String(cString: $0) } ?? "NCCL error \(result)"
        throw DistFlashError(.runtime, "\(call) failed: \(text) — run with NCCL_DEBUG=WARN for NCCL's own account")
    }
}
