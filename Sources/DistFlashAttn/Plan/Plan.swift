/// A sequence-parallel schedule as plain data: per step, which rank computes which attention block and which data
/// moves between ranks. Plans carry no tensors; the same value can be verified, simulated, drawn and executed.
///
/// Step semantics (one-step prefetch): step t runs as
/// ```
/// post every transfer with postedAt == t      (sends of data the sender holds at the start of step t)
/// compute every task of step t                (overlaps the transfers in flight)
/// wait for the transfers posted at t          (their data is usable from step t + 1 on)
/// ```
/// So a transfer consumed by a task at step t is posted at step t − 1 or earlier, and a partial result or gradient
/// computed at step t can be sent at step t + 1 at the earliest. Received partial results are merged into the
/// owner's accumulator as they arrive (`consumedAt = postedAt + 1`, which is `steps.count` for the last ones):
/// a plan may therefore end with a step that only returns results.
///
/// Work is counted in visible (query, key) pairs per head and batch element, so a causal diagonal block costs about
/// half a full block and a window or document mask costs what it lets through.
public struct Plan: Sendable, Equatable, CustomStringConvertible {
    public enum Pass: String, Sendable, CaseIterable {
        /// Computes O and LSE from Q, K, V.
        case forward
        /// Computes dQ, dK, dV from Q, K, V, O, dO and the forward's LSE.
        case backward
    }

    /// What one step does: the blocks computed and the transfers posted at its start.
    public struct Step: Sendable, Equatable {
        public var tasks: [BlockTask]
        public var transfers: [Transfer]

        public init(tasks: [BlockTask] = [], transfers: [Transfer] = []) {
            self.tasks = tasks
            self.transfers = transfers
        }
    }

    public var name: String
    /// P
    public var ranks: Int
    /// Which global positions each rank's query, key and value shard holds.
    public var layout: Layout
    public var pass: Pass
    public var steps: [Step]

    public init(name: String, ranks: Int, layout: Layout, pass: Pass, steps: [Step]) {
        self.name = name
        self.ranks = ranks
        self.layout = layout
        self.pass = pass
        self.steps = steps
    }

    public var description: String { "plan '\(name)' (\(pass), P = \(ranks))" }

    /// Work `[step][rank]` in visible (query, key, head) pairs per batch element.
    public var workByStep: [[Int]] {
        steps.map { step in
            var work = [Int](repeating: 0, count: ranks)
            for task in step.tasks { work[task.rank] += task.work }
            return work
        }
    }

    /// Bytes moved by all transfers, for `problem`'s shapes and dtype.
    public func bytes(problem: AttentionProblem) -> Int {
        steps.reduce(0) { total, step in total + step.transfers.reduce(0) { $0 + $1.bytes(problem: problem) } }
    }
}
