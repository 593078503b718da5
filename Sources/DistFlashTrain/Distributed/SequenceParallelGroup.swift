import DistFlashAttn
import Foundation

/// P ranks as threads of this process: each rank holds its shard of the sequence (the plan's layout), runs the
/// model on it, and talks to the others through one in-process communicator per `run` (the attention transfers
/// and the gradient all-reduce). A rank that fails stops every other rank within `timeout`.
public struct SequenceParallelGroup: Sendable {
    public let ranks: Int
    public let problem: AttentionProblem
    public let plans: RankAttention.Plans
    public let overlap: Bool
    public let timeout: TimeInterval
    private let backend: @Sendable (Int) -> any AttentionBackend

    /// `problem` is the attention of one layer over the whole sequence `[B, S, H, D]`; `backend(rank)` gives each
    /// rank its attention backend (e.g. a CPU backend with its share of the cores).
    public init(plan: Plan.Kind, ranks: Int, problem: AttentionProblem, overlap: Bool = true,
                timeout: TimeInterval = 120, backend: @escaping @Sendable (Int) -> any AttentionBackend) throws {
        guard ranks >= 1 else {
            throw DistFlashError(.invalidProblem, "workers P = \(ranks): must be ≥ 1")
        }
        (self.ranks, self.problem, self.overlap, self.timeout, self.backend) = (ranks, problem, overlap, timeout, backend)
        plans = try RankAttention.Plans(plan, problem: problem, ranks: ranks)
    }

    /// Runs `body` once per rank on its own thread; if any rank throws, all are aborted and one error naming the
    /// failing rank is thrown.
    public func run<T: Sendable>(_ body: @escaping @Sendable (RankContext) throws -> T) throws -> [T] {
        let communicator = InProcessCommunicator(ranks: ranks, timeout: timeout)
        let (problem, plans, overlap, backend) = (self.problem, self.plans, self.overlap, self.backend)
        return try RankThreads.run(ranks: ranks, communicator: communicator, what: "training step with plan '\(plans.forward.name)' (P = \(ranks))") { rank in
            let attention = RankAttention(rank: rank, problem: problem, plans: plans, communicator: communicator,
                                          backend: backend(rank), overlap: overlap)
            return try body(RankContext(attention: PlanAttention(attention)))
        }
    }
}
