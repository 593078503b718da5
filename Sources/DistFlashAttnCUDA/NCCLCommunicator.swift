import DistFlashAttn
import Foundation

/// The ranks of one process, one GPU each, exchanging tensors with NCCL: each posted step is one
/// ncclGroupStart/End of sends and receives on the rank's own stream (so no order of peers can deadlock), and
/// `wait` polls that group's event — bounded by the timeout, watching NCCL's asynchronous errors and the other
/// ranks' failures, so a failing or missing rank never hangs the others. After a failure every communicator is
/// aborted (ncclCommAbort), which also ends kernels still waiting on a peer.
///
/// The executor's tensors live on the host, so payloads are staged through device buffers on both sides; NCCL
/// matches a peer pair's messages by order, which the plan fixes (every rank walks the same transfers in order).
public final class NCCLCommunicator: Communicator, @unchecked Sendable {
    public let ranks: Int
    public let timeout: TimeInterval
    let nccl: NCCL
    let devices: [CUDADevice]
    private let comms: [NCCL.Comm]
    private let streams: [OpaquePointer?]
    /// Barriers and the first failure, shared by the rank threads.
    private let host: InProcessCommunicator
    // Invariant: `groups`, `nextToken` and `failed` are touched only while holding `lock`.
    private let lock = NSLock()
    private var groups: [Int: Group] = [:]
    private var nextToken = 1
    private var failed = false

    /// A posted group's device buffers (kept alive until it completes) and its completion event.
    private struct Group {
        let rank: Int
        let sends: [DeviceBuffer]
        let receives: [[DeviceBuffer]]
        let event: OpaquePointer?
    }

    /// One communicator per GPU of `devices` (rank r drives `devices[r]`), from ncclCommInitAll.
    public init(devices: [CUDADevice], timeout: TimeInterval) throws {
        nccl = try NCCL()
        (self.devices, self.ranks, self.timeout) = (devices, devices.count, timeout)
        host = InProcessCommunicator(ranks: devices.count, timeout: timeout)
        var comms = [NCCL.Comm](repeating: nil, count: devices.count)
        let ordinals = devices.map { Int32($0.ordinal) }
        try nccl.check(nccl.ncclCommInitAll(&comms, Int32(devices.count), ordinals),
                       "ncclCommInitAll(GPUs \(ordinals)) with NCCL \(nccl.version)")
        self.comms = comms
        streams = try devices.map { device in
            try device.makeCurrent()
            var stream: OpaquePointer?
            try device.driver.check(device.driver.cuStreamCreate(&stream, 1), "cuStreamCreate")  // non-blocking
            return stream
        }
    }

    deinit {
        for (device, (comm, stream)) in zip(devices, zip(comms, streams)) {
            _ = try? device.makeCurrent()
            _ = failed ? nccl.ncclCommAbort(comm) : nccl.ncclCommDestroy(comm)
            _ = device.driver.cuStreamDestroy(stream)
        }
    }

    public func post(_ exchange: Exchange, rank: Int) throws -> Exchange.Pending {
        try host.throwIfAborted(rank: rank)  // never enqueue on a communicator that is being aborted
        let device = devices[rank]
        try device.makeCurrent()
        let sends = try exchange.sends.flatMap { message in
            try message.payload.map { try DeviceBuffer.upload(device, $0.scalars) }
        }
        let receives = try exchange.receives.map { expected in
            try expected.shapes.map { try DeviceBuffer(device, bytes: 4 * $0.reduce(1, *)) }
        }
        try nccl.check(nccl.ncclGroupStart(), "ncclGroupStart")
        var enqueued: Result<Void, Error> = .success(())
        do {
            var next = sends.makeIterator()
            for message in exchange.sends {
                for tensor in message.payload {
                    try nccl.check(nccl.ncclSend(next.next()!.address, tensor.count, NCCL.float32, Int32(message.to),
                                                 comms[rank], streams[rank]), "ncclSend(rank \(rank) → \(message.to))")
                }
            }
            for (expected, buffers) in zip(exchange.receives, receives) {
                for (shape, buffer) in zip(expected.shapes, buffers) {
                    try nccl.check(nccl.ncclRecv(buffer.address, shape.reduce(1, *), NCCL.float32, Int32(expected.from),
                                                 comms[rank], streams[rank]), "ncclRecv(rank \(rank) ← \(expected.from))")
                }
            }
        } catch {
            enqueued = .failure(error)
        }
        try nccl.check(nccl.ncclGroupEnd(), "ncclGroupEnd (rank \(rank))")
        try enqueued.get()
        var event: OpaquePointer?
        try device.driver.check(device.driver.cuEventCreate(&event, 2), "cuEventCreate")  // timing disabled
        try device.driver.check(device.driver.cuEventRecord(event, streams[rank]), "cuEventRecord")
        let token: Int = lock.withLock {
            defer { nextToken += 1 }
            groups[nextToken] = Group(rank: rank, sends: sends, receives: receives, event: event)
            return nextToken
        }
        return Exchange.Pending(receives: exchange.receives, token: token)
    }

    public func wait(_ pending: Exchange.Pending, rank: Int) throws -> [[Tensor]] {
        guard let group = lock.withLock({ groups.removeValue(forKey: pending.token) }), group.rank == rank else {
            throw DistFlashError(.runtime, "rank \(rank): waited for an exchange it never posted")
        }
        let device = devices[rank]
        try device.makeCurrent()
        defer { _ = device.driver.cuEventDestroy(group.event) }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let status = device.driver.cuEventQuery(group.event)
            if status == 0 { break }
            if status != 600 {  // CUDA_ERROR_NOT_READY
                do { try device.driver.check(status, "cuEventQuery (rank \(rank))") } catch { throw failure(error, rank) }
            }
            var asyncError: NCCL.Result = 0
            _ = nccl.ncclCommGetAsyncError(comms[rank], &asyncError)
            if asyncError != 0 && asyncError != NCCL.inProgress {
                do { try nccl.check(asyncError, "NCCL transfer of rank \(rank)") } catch { throw failure(error, rank) }
            }
            try host.throwIfAborted(rank: rank)
            if Date() >= deadline {
                throw failure(DistFlashError(.runtime, "rank \(rank): timed out after \(timeout) s waiting for "
                    + "messages from ranks \(Set(pending.receives.map(\.from)).sorted())"), rank)
            }
            usleep(20)
        }
        return try zip(pending.receives, group.receives).map { expected, buffers in
            try zip(expected.shapes, buffers).map { shape, buffer in
                try Tensor(shape: shape, scalars: buffer.download(shape.reduce(1, *), as: Float.self, initial: 0))
            }
        }
    }

    public func barrier(rank: Int) throws { try host.barrier(rank: rank) }

    public func abort(_ error: DistFlashError) {
        lock.withLock { failed = true }
        host.abort(error)
    }

    /// Records `error` as the run's failure (every rank stops) and returns it to throw.
    private func failure(_ error: Error, _ rank: Int) -> DistFlashError {
        let failure = error as? DistFlashError ?? DistFlashError(.runtime, "rank \(rank): \(error)")
        abort(failure)
        return failure
    }
}
