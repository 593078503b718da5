import Foundation

/// Ranks as threads of one process exchanging tensors through mailboxes — the CPU default.
///
/// An optional simulated link (`LinkModel`) makes a message arrive `latency + bytes / bandwidth` after it is sent,
/// with each rank's sends sharing its outgoing link in order; that lets overlap be measured on CPU workers.
public final class InProcessCommunicator: Communicator, @unchecked Sendable {
    private struct Address: Hashable { let from, to, tag: Int }
    private struct Message { let payload: [Tensor]; let arrival: Date }

    public let ranks: Int
    public let timeout: TimeInterval
    public let link: LinkModel?
    // Invariant: the properties below are read and written only while holding `condition`.
    private let condition = NSCondition()
    private var mailbox: [Address: Message] = [:]
    private var linkFree: [Date]
    private var failure: DistFlashError?
    private var arrived = 0
    private var generation = 0

    /// - timeout: seconds a `receive` may wait before the run fails.
    public init(ranks: Int, timeout: TimeInterval = 60, link: LinkModel? = nil) {
        self.ranks = ranks
        self.timeout = timeout
        self.link = link
        self.linkFree = [Date](repeating: .distantPast, count: ranks)
    }

    public func post(_ exchange: Exchange<Tensor>, rank: Int) throws -> ExchangePending {
        for message in exchange.sends { try send(message.payload, from: rank, to: message.to, tag: message.tag) }
        return ExchangePending(receives: exchange.receives)
    }

    public func wait(_ pending: ExchangePending, rank: Int) throws -> [[Tensor]] {
        try pending.receives.map { expected in
            let payload = try receive(from: expected.from, to: rank, tag: expected.tag)
            guard payload.map(\.shape) == expected.shapes else {
                let error = DistFlashError(.shapeMismatch, "rank \(rank): message \(expected.tag) from rank "
                    + "\(expected.from) holds shapes \(payload.map(\.shape)), expected \(expected.shapes)")
                abort(error)
                throw error
            }
            return payload
        }
    }

    private func send(_ payload: [Tensor], from: Int, to: Int, tag: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        if let failure {
            throw DistFlashError(.runtime, "rank \(from): stopped before sending message \(tag) to rank \(to) "
                + "because \(failure.message)")
        }
        var arrival = Date()
        if let link {
            let bytes = Double(payload.reduce(0) { $0 + $1.count } * MemoryLayout<Float>.size)
            let start = max(arrival, linkFree[from])
            linkFree[from] = start.addingTimeInterval(bytes / link.bandwidth)
            arrival = linkFree[from].addingTimeInterval(link.latency)
        }
        mailbox[Address(from: from, to: to, tag: tag)] = Message(payload: payload, arrival: arrival)
        condition.broadcast()
    }

    private func receive(from: Int, to: Int, tag: Int) throws -> [Tensor] {
        let address = Address(from: from, to: to, tag: tag)
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let failure {
                throw DistFlashError(.runtime, "rank \(to): stopped while waiting for message \(tag) from rank \(from) "
                    + "because \(failure.message)")
            }
            let now = Date()
            if let message = mailbox[address], message.arrival <= now {
                mailbox[address] = nil
                return message.payload
            }
            if now >= deadline {
                let error = DistFlashError(.runtime, "rank \(to): timed out after \(timeout) s waiting for message "
                    + "\(tag) from rank \(from)")
                failure = failure ?? error
                condition.broadcast()
                throw error
            }
            _ = condition.wait(until: min(deadline, mailbox[address]?.arrival ?? deadline))
        }
    }

    public func barrier(rank: Int) throws { try meet(rank: rank, at: "the final barrier") }

    /// Every rank waits here until all have arrived (`place` names the spot in errors); bounded by the timeout and
    /// ended by any rank's failure.
    public func meet(rank: Int, at place: String) throws {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        let mine = generation
        arrived += 1
        if arrived == ranks {
            arrived = 0
            generation += 1
            condition.broadcast()
        }
        while generation == mine {
            if let failure { throw DistFlashError(.runtime, "rank \(rank): stopped at \(place) because \(failure.message)") }
            if Date() >= deadline {
                let error = DistFlashError(.runtime, "rank \(rank): timed out after \(timeout) s at \(place)")
                failure = failure ?? error
                condition.broadcast()
                throw error
            }
            _ = condition.wait(until: deadline)
        }
        if let failure { throw DistFlashError(.runtime, "rank \(rank): stopped at \(place) because \(failure.message)") }
    }

    /// The run's first failure, if any rank aborted it.
    public var recordedFailure: DistFlashError? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    /// Throws the run's failure, if any rank aborted it.
    public func throwIfAborted(rank: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw DistFlashError(.runtime, "rank \(rank): stopped because \(failure.message)") }
    }

    public func abort(_ error: DistFlashError) {
        condition.lock()
        if failure == nil { failure = error }
        condition.broadcast()
        condition.unlock()
    }
}
