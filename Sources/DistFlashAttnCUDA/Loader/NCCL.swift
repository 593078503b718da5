import DistFlashAttn
import _NCCLTypes

/// NCCL, loaded at run time (`DISTFLASH_LIBNCCL` overrides the path). Only the calls the communicator uses; the
/// enum values are NCCL's (ncclFloat16 = 6, ncclFloat32 = 7, ncclBfloat16 = 9, ncclSum = 0, ncclInProgress = 7).
struct NCCL: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Result = Int32
    typealias Comm = OpaquePointer?
    typealias Stream = OpaquePointer?
    static let float16: Int32 = 6
    static let float32: Int32 = 7
    static let bfloat16: Int32 = 9

    /// NCCL's data type for a tensor's elements.
    static func type(_ precision: DeviceTensor.Precision) -> Int32 {
        switch precision {
        case .float32: float32
        case .bfloat16: bfloat16
        case .float16: float16
        }
    }
    static let sum: Int32 = 0
    static let inProgress: Result = 7

    let library: DynamicLibrary
    let ncclGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let ncclCommInitAll: @convention(c) (UnsafeMutablePointer<Comm>, Int32, UnsafePointer<Int32>?) -> Result
    let ncclGetUniqueId: @convention(c) (UnsafeMutablePointer<DistFlashNCCLUniqueId>) -> Result
    let ncclCommInitRank: DistFlashNCCLCommInitRank
    let ncclCommAbort: @convention(c) (Comm) -> Result
    let ncclCommDestroy: @convention(c) (Comm) -> Result
    let ncclCommGetAsyncError: @convention(c) (Comm, UnsafeMutablePointer<Result>) -> Result
    let ncclGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?
    let ncclGroupStart: @convention(c) () -> Result
    let ncclGroupEnd: @convention(c) () -> Result
    let ncclSend: @convention(c) (UInt64, Int, Int32, Int32, Comm, Stream) -> Result
    let ncclRecv: @convention(c) (UInt64, Int, Int32, Int32, Comm, Stream) -> Result
    let ncclAllReduce: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Comm, Stream) -> Result
    /// (send, receive, elements per rank, type, comm, stream)
    let ncclAllGather: @convention(c) (UInt64, UInt64, Int, Int32, Comm, Stream) -> Result
    /// (send, receive, elements per rank, type, op, comm, stream)
    let ncclReduceScatter: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Comm, Stream) -> Result

    init() throws {
        library = try DynamicLibrary("NCCL (libnccl)", candidates: ["libnccl.so.2", "libnccl.so"],
                                     environment: "DISTFLASH_LIBNCCL")
        ncclGetVersion = try library.symbol("ncclGetVersion")
        ncclCommInitAll = try library.symbol("ncclCommInitAll")
        ncclGetUniqueId = try library.symbol("ncclGetUniqueId")
        ncclCommInitRank = try library.symbol("ncclCommInitRank")
        ncclCommAbort = try library.symbol("ncclCommAbort")
        ncclCommDestroy = try library.symbol("ncclCommDestroy")
        ncclCommGetAsyncError = try library.symbol("ncclCommGetAsyncError")
        ncclGetErrorString = try library.symbol("ncclGetErrorString")
        ncclGroupStart = try library.symbol("ncclGroupStart")
        ncclGroupEnd = try library.symbol("ncclGroupEnd")
        ncclSend = try library.symbol("ncclSend")
        ncclRecv = try library.symbol("ncclRecv")
        ncclAllReduce = try library.symbol("ncclAllReduce")
        ncclAllGather = try library.symbol("ncclAllGather")
        ncclReduceScatter = try library.symbol("ncclReduceScatter")
    }

    /// e.g. "2.28.3"
    var version: String {
        var code: Int32 = 0
        _ = ncclGetVersion(&code)
        return "\(code / 10000).\(code / 100 % 100).\(code % 100)"
    }

    /// A new communicator's id (rank 0 makes it; every rank passes it to `initRank`), as 128 bytes.
    func uniqueId() throws -> [UInt8] {
        var id = DistFlashNCCLUniqueId()
        try check(ncclGetUniqueId(&id), "ncclGetUniqueId")
        return withUnsafeBytes(of: &id) { Array($0) }
    }

    /// Joins the communicator `id` as `rank` of `ranks` on the current device (blocks until all ranks join).
    func initRank(_ rank: Int, of ranks: Int, id: [UInt8]) throws -> Comm {
        var uniqueId = DistFlashNCCLUniqueId()
        guard id.count == MemoryLayout<DistFlashNCCLUniqueId>.size else {
            throw DistFlashError(.runtime, "NCCL id of \(id.count) bytes: expected \(MemoryLayout<DistFlashNCCLUniqueId>.size)")
        }
        withUnsafeMutableBytes(of: &uniqueId) { $0.copyBytes(from: id) }
        var comm: UnsafeMutableRawPointer?
        try check(ncclCommInitRank(&comm, Int32(ranks), uniqueId, Int32(rank)),
                  "ncclCommInitRank(rank \(rank) of \(ranks)) with NCCL \(version)")
        return OpaquePointer(comm)
    }

    func check(_ result: Result, _ call: String) throws {
        guard result != 0 else { return }
        let text = ncclGetErrorString(result).map { String(cString: $0) } ?? "NCCL error \(result)"
        throw DistFlashError(.runtime, "\(call) failed: \(text) — run with NCCL_DEBUG=WARN for NCCL's own account")
    }
}
