import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ctrl-C as a request, not a kill: the first SIGINT sets `isRequested` (the training loop finishes its step,
/// saves all-or-nothing, and exits); a second one exits at once with status 130. Either way no file is left
/// half-written, because every file is written to a temporary name and renamed into place (`AtomicFile`).
public enum InterruptRequest {
    private static let count = Atomic<Int>(0)
    // Invariant: written once, by `install` on the main thread, before any signal can reach the handler; only kept
    // so the dispatch source stays alive.
    nonisolated(unsafe) private static var source: DispatchSourceSignal?

    /// Routes SIGINT to a dispatch queue (the handler runs as ordinary code, not in signal context). `notice` is
    /// printed to standard error on the first Ctrl-C. Call once.
    public static func install(notice: String) {
        guard source == nil else { return }
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            if count.add(1, ordering: .relaxed).newValue == 1 {
                FileHandle.standardError.write(Data("\n\(notice)\n".utf8))
            } else {
                let message = "\ninterrupted again: stopping now (files already written are whole; nothing new "
                    + "was saved)\n"
                FileHandle.standardError.write(Data(message.utf8))
                exit(130)
            }
        }
        source.resume()
        self.source = source
    }

    /// Whether Ctrl-C was pressed since `install`.
    public static var isRequested: Bool { count.load(ordering: .relaxed) > 0 }
}
