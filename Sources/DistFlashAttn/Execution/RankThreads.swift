import Foundation

/// Runs one closure per rank, each on its own thread (ranks block on each other, so they cannot share a bounded
/// pool). A rank that throws aborts `communicator`, so every other rank stops within its timeout; the call then
/// throws one error that names the root cause first and lists every rank's failure — never a hang.
public enum RankThreads {
    public static func run<T: Sendable>(ranks: Int, communicator: some Communicator, what: String,
                                        _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
        let outcomes = Outcomes<T>(ranks)
        let done = DispatchGroup()
        for rank in 0..<ranks {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                do {
                    outcomes.set(rank, .success(try body(rank)))
                } catch {
                    let failure = error as? DistFlashError ?? DistFlashError(.runtime, "rank \(rank): \(error)")
                    communicator.abort(failure)
                    outcomes.set(rank, .failure(failure))
                }
            }
        }
        done.wait()
        return try outcomes.collect(what)
    }
}

/// Per-rank results written by the rank threads.
private final class Outcomes<T: Sendable>: @unchecked Sendable {
    // Invariant: `results` is touched only while holding `lock`.
    private let lock = NSLock()
    private var results: [Result<T, DistFlashError>?]

    init(_ ranks: Int) { results = Array(repeating: nil, count: ranks) }

    func set(_ rank: Int, _ result: Result<T, DistFlashError>) {
        lock.withLock { results[rank] = result }
    }

    /// The values, or one error that lists every rank's failure (the root cause first).
    func collect(_ what: String) throws -> [T] {
        try lock.withLock {
            let failures = results.enumerated().compactMap { rank, result -> (Int, DistFlashError)? in
                if case .failure(let error) = result { return (rank, error) }
                return nil
            }
            if !failures.isEmpty {
                // The root cause is the failure that did not merely stop because of another rank's.
                let root = failures.first { !$0.1.message.contains(": stopped ") } ?? failures[0]
                let lines = failures.map { "  rank \($0.0): \($0.1.message)" }.joined(separator: "\n")
                throw DistFlashError(.runtime, "\(what) failed on \(failures.count) of \(results.count) ranks: "
                    + "\(root.1.message)\n\(lines)")
            }
            return results.map { result -> T in
                guard case .success(let value) = result else { preconditionFailure("rank finished without a result") }
                return value
            }
        }
    }
}
