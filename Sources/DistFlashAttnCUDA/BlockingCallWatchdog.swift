import DistFlashAttn
import Foundation

/// Bounds the NCCL calls that may block the calling thread (group ends that set up connections to a peer, an
/// all-reduce, joining a communicator): when one is still inside after `limit` seconds — a peer died or never
/// came — the process prints the rank, the call and the reason, and exits with status 1. Polling cannot help
/// there (the thread is inside NCCL), and a process that exits is what lets every other rank's own timeout fire.
final class BlockingCallWatchdog: @unchecked Sendable {
    // Invariant: `calls` and `nextKey` are touched only while holding `lock`.
    private let lock = NSLock()
    private var calls: [Int: (deadline: Date, what: String)] = [:]
    private var nextKey = 0
    let limit: TimeInterval
    private let onStuck: @Sendable (String) -> Void

    /// `onStuck` gets the message once a watched call outlives `limit` (default: print it and exit at once —
    /// exit handlers could wait on the stuck GPU work).
    init(limit: TimeInterval, onStuck: @escaping @Sendable (String) -> Void = { message in
        FileHandle.standardError.write(Data(("Error: " + message + "\n").utf8))
        _exit(1)
    }) {
        (self.limit, self.onStuck) = (limit, onStuck)
        Thread.detachNewThread { [weak self] in
            while let watchdog = self {
                if watchdog.check() { return }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
    }

    /// Runs `body`, a call that may block in NCCL, under the watch.
    func watch<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
        let key: Int = lock.withLock {
            defer { nextKey += 1 }
            calls[nextKey] = (Date().addingTimeInterval(limit), what())
            return nextKey
        }
        defer { _ = lock.withLock { calls.removeValue(forKey: key) } }
        return try body()
    }

    /// Reports the first call past its deadline; returns whether it did (the watch then ends).
    private func check() -> Bool {
        let now = Date()
        guard let stuck = lock.withLock({ calls.values.first { $0.deadline <= now } }) else { return false }
        onStuck("\(stuck.what) has not returned after \(limit) s (a peer has failed or never joined); exiting so "
            + "that every rank stops")
        return true
    }
}
