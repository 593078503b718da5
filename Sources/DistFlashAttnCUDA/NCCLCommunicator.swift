import DistFlashAttn
import Foundation

/// Ranks on GPUs exchanging device tensors with NCCL, in either process model: all ranks of one process (one
/// thread and GPU each, `init(devices:)`), or the one rank of this process among P processes (`init(rank:…)`).
///
/// Each posted step is one ncclGroupStart/End of sends and receives on the rank's NCCL stream (so no order of
/// peers can deadlock). That stream first waits (an event) for the work already queued on the rank's compute
/// stream, so a block computed this step may be sent in the same step, with no host copy. `wait` polls the
/// group's event — bounded by the timeout, watching NCCL's asynchronous errors and this process's other ranks'
/// failures — so a failing or missing rank never hangs the others. After a failure the communicators are aborted
/// (ncclCommAbort), which also ends kernels still waiting on a peer. NCCL matches a peer pair's messages by order,
/// which the plan fixes (every rank walks the same transfers in order).
public final class NCCLCommunicator: Communicator, @unchecked Sendable {
    public let ranks: Int
    public let timeout: TimeInterval
    /// The type of the plans' input tensors (Q, K, V, dO) it receives: bf16 or fp16.
    public let inputs: DeviceTensor.Precision
    let nccl: NCCL
    /// The ranks this process drives, by global rank.
    private let members: [Int: Member]
    /// The first failure, and barriers among this process's rank threads.
    private let local: InProcessCommunicator
    /// Whether other processes hold ranks (barriers then go through NCCL).
    private let spansProcesses: Bool
    /// Ends the process if a call that blocks inside NCCL outlives the timeout.
    private let watchdog: BlockingCallWatchdog
    // Invariant: `groups`, `nextToken` and `failed` are touched only while holding `lock`.
    private let lock = NSLock()
    private var groups: [Int: Group] = [:]
    private var nextToken = 1
    private var failed = false
    /// Tensors of transfers that failed: NCCL may still write into them until the communicator is aborted, so
    /// they are released only after that (deinit), never back into the pool while a transfer could land.
    private var orphans: [DeviceTensor] = []

    struct Member {
        let device: CUDADevice
        let comm: NCCL.Comm
        /// NCCL's stream, apart from the compute stream so transfers run beside kernels.
        let stream: OpaquePointer?
    }

    /// A posted group's tensors (kept alive until it completes) and its completion event.
    private struct Group {
        let rank: Int
        let sends: [DeviceTensor]
        let receives: [[DeviceTensor]]
        let event: OpaquePointer?
    }

    /// Every rank in this process: rank r drives `devices[r]` (ncclCommInitAll).
    public init(devices: [CUDADevice], timeout: TimeInterval, inputs: DeviceTensor.Precision = .bfloat16) throws {
        nccl = try NCCL()
        self.inputs = inputs
        (ranks, self.timeout, spansProcesses) = (devices.count, timeout, false)
        local = InProcessCommunicator(ranks: devices.count, timeout: timeout)
        watchdog = Self.watchdog(timeout: timeout, local: local)
        var comms = [NCCL.Comm](repeating: nil, count: devices.count)
        let ordinals = devices.map { Int32($0.ordinal) }
        try nccl.check(nccl.ncclCommInitAll(&comms, Int32(devices.count), ordinals),
                       "ncclCommInitAll(GPUs \(ordinals)) with NCCL \(nccl.version)")
        members = Dictionary(uniqueKeysWithValues: try devices.indices.map { rank in
            (rank, Member(device: devices[rank], comm: comms[rank], stream: try Self.stream(on: devices[rank])))
        })
        _ = try RankThreads.run(ranks: devices.count, communicator: self, what: "connecting the GPUs") { rank in
            try self.connectPeers(rank: rank)
        }
    }

    /// Rank `rank` of `ranks` processes on `device`, joining the communicator named by `id` (from
    /// `NCCL.uniqueId()` on rank 0, handed to the others out of band: `Rendezvous`). Connects to every peer
    /// before returning, while they are all known to be alive: NCCL sets up a peer's connection inside the first
    /// call that reaches it, and a call that waits there for a peer that has since died would never return.
    public init(rank: Int, of ranks: Int, device: CUDADevice, id: [UInt8], timeout: TimeInterval,
                inputs: DeviceTensor.Precision = .bfloat16) throws {
        self.inputs = inputs
        let local = InProcessCommunicator(ranks: 1, timeout: timeout)
        let (nccl, watchdog) = (try NCCL(), Self.watchdog(timeout: timeout, local: local))
        (self.nccl, self.watchdog, self.local) = (nccl, watchdog, local)
        (self.ranks, self.timeout, spansProcesses) = (ranks, timeout, true)
        try device.makeCurrent()
        let comm = try watchdog.watch("rank \(rank): ncclCommInitRank (\(ranks) ranks)") {
            try nccl.initRank(rank, of: ranks, id: id)
        }
        members = [rank: Member(device: device, comm: comm, stream: try Self.stream(on: device))]
        try connectPeers(rank: rank)
    }

    /// One tiny message to and from every peer, then a barrier: NCCL sets up a pair's connection in the first call
    /// that reaches it, so doing it here, while every rank is known to be alive, keeps connection set-up out of
    /// the timed runs and out of calls that a dead peer could leave blocked.
    private func connectPeers(rank: Int) throws {
        let peers = (0..<ranks).filter { $0 != rank }
        let token = try DeviceTensor(try member(rank).device, shape: [1], precision: .float32)
        _ = try exchange(Exchange(sends: peers.map { .init(to: $0, tag: -1, payload: [token]) },
                                  receives: peers.map { .init(from: $0, tag: -1, shapes: [[1]]) }), rank: rank)
        try barrier(rank: rank)
    }

    /// The watchdog of blocking NCCL calls, whose exit message also gives the run's first recorded failure (the
    /// likely reason a peer stopped answering).
    private static func watchdog(timeout: TimeInterval, local: InProcessCommunicator) -> BlockingCallWatchdog {
        BlockingCallWatchdog(limit: timeout + 10) { message in
            let cause = local.recordedFailure.map { " — the run had already failed: \($0.message)" } ?? ""
            FileHandle.standardError.write(Data(("Error: " + message + cause + "\n").utf8))
            _exit(1)
        }
    }

    private static func stream(on device: CUDADevice) throws -> OpaquePointer? {
        try device.makeCurrent()
        var stream: OpaquePointer?
        try device.driver.check(device.driver.cuStreamCreate(&stream, 1), "cuStreamCreate")  // non-blocking
        return stream
    }

    deinit {
        for member in members.values {
            _ = try? member.device.makeCurrent()
            _ = failed ? nccl.ncclCommAbort(member.comm) : nccl.ncclCommDestroy(member.comm)
            _ = member.device.driver.cuStreamDestroy(member.stream)
        }
        orphans.removeAll()  // no transfer can land any more
    }

    func member(_ rank: Int) throws -> Member {
        guard let member = members[rank] else {
            throw DistFlashError(.runtime, "rank \(rank) is not driven by this process (it holds \(members.keys.sorted()))")
        }
        return member
    }

    public func post(_ exchange: Exchange<DeviceTensor>, rank: Int) throws -> ExchangePending {
        try local.throwIfAborted(rank: rank)  // never enqueue on a communicator that is being aborted
        let member = try member(rank)
        let (device, driver) = (member.device, member.device.driver)
        try device.makeCurrent()
        let sends = exchange.sends.flatMap(\.payload)
        let receives = try exchange.receives.map { expected in
            try expected.shapes.indices.map { i in
                try DeviceTensor(device, shape: expected.shapes[i],
                                 precision: expected.precision(i) == .input ? inputs : .float32)
            }
        }
        try orderAfterCompute(member)
        try watchdog.watch("rank \(rank): ncclGroupEnd of a step's sends and receives") {
            try enqueue(exchange, receives, member, rank)
        }
        var event: OpaquePointer?
        try driver.check(driver.cuEventCreate(&event, 2), "cuEventCreate")  // timing disabled
        try driver.check(driver.cuEventRecord(event, member.stream), "cuEventRecord")
        let token: Int = lock.withLock {
            defer { nextToken += 1 }
            groups[nextToken] = Group(rank: rank, sends: sends, receives: receives, event: event)
            return nextToken
        }
        return ExchangePending(receives: exchange.receives, token: token)
    }

    /// One group of the exchange's sends and receives on the rank's NCCL stream.
    private func enqueue(_ exchange: Exchange<DeviceTensor>, _ receives: [[DeviceTensor]], _ member: Member,
                         _ rank: Int) throws {
        try nccl.check(nccl.ncclGroupStart(), "ncclGroupStart")
        var enqueued: Result<Void, Error> = .success(())
        do {
            for message in exchange.sends {
                for tensor in message.payload {
                    try nccl.check(nccl.ncclSend(tensor.address, tensor.count, NCCL.type(tensor.precision),
                                                 Int32(message.to), member.comm, member.stream),
                                   "ncclSend(rank \(rank) → \(message.to))")
                }
            }
            for (expected, tensors) in zip(exchange.receives, receives) {
                for tensor in tensors {
                    try nccl.check(nccl.ncclRecv(tensor.address, tensor.count, NCCL.type(tensor.precision),
                                                 Int32(expected.from), member.comm, member.stream),
                                   "ncclRecv(rank \(rank) ← \(expected.from))")
                }
            }
        } catch {
            enqueued = .failure(error)
        }
        let ended = nccl.ncclGroupEnd()
        try enqueued.get()  // the failing send or receive names the call and the peer: the root cause
        try nccl.check(ended, "ncclGroupEnd (rank \(rank))")
    }

    public func wait(_ pending: ExchangePending, rank: Int) throws -> [[DeviceTensor]] {
        guard let group = lock.withLock({ groups.removeValue(forKey: pending.token) }), group.rank == rank else {
            throw DistFlashError(.runtime, "rank \(rank): waited for an exchange it never posted")
        }
        defer { _ = members[rank]?.device.driver.cuEventDestroy(group.event) }
        do {
            try poll(group.event, rank: rank,
                     waitingFor: "messages from ranks \(Set(pending.receives.map(\.from)).sorted())")
        } catch {
            lock.withLock { orphans += group.sends + group.receives.joined() }
            throw error
        }
        // Done on the NCCL stream, which the host has seen complete: the compute stream may use them from here.
        return group.receives
    }

    /// Every rank of this process meets; across processes, then an all-reduce of one number over NCCL (bounded
    /// by the timeout like any wait).
    public func barrier(rank: Int) throws {
        try local.barrier(rank: spansProcesses ? 0 : rank)
        guard spansProcesses else { return }
        let token = try DeviceTensor(try member(rank).device, shape: [1], precision: .float32)
        try collective("the other ranks at the final barrier", rank: rank, tensors: [token]) { member in
            try nccl.check(nccl.ncclAllReduce(token.address, token.address, 1, NCCL.float32, NCCL.sum, member.comm,
                                              member.stream), "ncclAllReduce (barrier of rank \(rank))")
        }
    }

    /// Runs `enqueue` (NCCL calls on the rank's NCCL stream, after the work queued on its compute stream) and
    /// returns once it completed, bounded by the timeout like any wait. `tensors` are the ones NCCL touches: on a
    /// failure they are kept until the communicator is aborted.
    func collective(_ what: String, rank: Int, tensors: [DeviceTensor], enqueue: (Member) throws -> Void) throws {
        try local.throwIfAborted(rank: rank)
        let member = try member(rank)
        let driver = member.device.driver
        try member.device.makeCurrent()
        try orderAfterCompute(member)
        // NCCL's launch of a collective on one of several devices driven by one process waits inside NCCL until
        // the process's other devices launch theirs: meet first, where a rank that failed ends the wait.
        if !spansProcesses && ranks > 1 { try local.meet(rank: rank, at: "the start of \(what)") }
        try watchdog.watch("rank \(rank): NCCL call waiting for \(what)") { try enqueue(member) }
        var event: OpaquePointer?
        try driver.check(driver.cuEventCreate(&event, 2), "cuEventCreate")  // timing disabled
        defer { _ = driver.cuEventDestroy(event) }
        try driver.check(driver.cuEventRecord(event, member.stream), "cuEventRecord")
        do {
            try poll(event, rank: rank, waitingFor: what)
        } catch {
            lock.withLock { orphans += tensors }
            throw error
        }
    }

    public func abort(_ error: DistFlashError) {
        lock.withLock { failed = true }
        local.abort(error)
    }

    /// Makes the rank's NCCL stream wait for what is queued on its compute stream so far (the contents of the
    /// tensors it sends, the allocation of those it receives into).
    private func orderAfterCompute(_ member: Member) throws {
        let driver = member.device.driver
        var ready: OpaquePointer?
        try driver.check(driver.cuEventCreate(&ready, 2), "cuEventCreate")  // timing disabled
        defer { _ = driver.cuEventDestroy(ready) }
        try driver.check(driver.cuEventRecord(ready, member.device.stream), "cuEventRecord")
        try driver.check(driver.cuStreamWaitEvent(member.stream, ready, 0), "cuStreamWaitEvent")
    }

    /// Returns once `event` has completed; throws (and aborts the run) on a CUDA or NCCL error, on another rank's
    /// failure, or when the timeout passes.
    private func poll(_ event: OpaquePointer?, rank: Int, waitingFor what: String) throws {
        let member = try member(rank)
        try member.device.makeCurrent()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let status = member.device.driver.cuEventQuery(event)
            if status == 0 { return }
            if status != 600 {  // CUDA_ERROR_NOT_READY
                do { try member.device.driver.check(status, "cuEventQuery (rank \(rank))") } catch { throw failure(error, rank) }
            }
            var asyncError: NCCL.Result = 0
            _ = nccl.ncclCommGetAsyncError(member.comm, &asyncError)
            if asyncError != 0 && asyncError != NCCL.inProgress {
                do { try nccl.check(asyncError, "NCCL transfer of rank \(rank)") } catch { throw failure(error, rank) }
            }
            try local.throwIfAborted(rank: rank)
            if Date() >= deadline {
                throw failure(DistFlashError(.runtime, "rank \(rank): timed out after \(timeout) s waiting for \(what)"),
                              rank)
            }
            usleep(20)
        }
    }

    /// Records `error` as the run's failure (every rank stops) and returns it to throw.
    private func failure(_ error: Error, _ rank: Int) -> DistFlashError {
        let failure = error as? DistFlashError ?? DistFlashError(.runtime, "rank \(rank): \(error)")
        abort(failure)
        return failure
    }
}
