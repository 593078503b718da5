import DistFlashAttn
import Foundation

/// Bounds the NCCL calls that may block the calling thread (group ends that set up connections to a peer, an
/// all-reduce, joining a communicator): when one is still inside after the timeout plus a grace period — a peer
/// died or never came — the process prints the rank, the call and the reason, and exits with status 1. Polling
/// cannot help there (the thread is inside NCCL), and a process that exits is what lets every other rank's own
/// timeout fire.
final class BlockingCallWatchdog: @unchecked Sendable {
    // Invariant: `calls` and `nextKey` are touched only while holding `lock`.
    private let lock = NSLock()
    private var calls: [Int: (deadline: Date, what: String)] = [:]
    private var nextKey = 0
    let limit: TimeInterval

    init(timeout: TimeInterval) {
        limit = timeout + 10
        Thread.detachNewThread { [weak self] in
            while let watchdog = self {
                watchdog.check()
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

    private func check() {
        let now = Date()
        guard let stuck = lock.withLock({ calls.values.first { $0.deadline <= now } }) else { return }
        let message = "Error: \(stuck.what) has not returned after \(Int(limit)) s (a peer has failed or never "
            + "joined); exiting so that every rank stops\n"
        FileHandle.standardError.write(Data(message.utf8))
        _exit(1)  // at once: exit handlers could wait on the stuck GPU work
    }
}
