/// One rank's side of distributed attention, for callers that run their own rank threads (the trainer): this
/// rank's shard in, this rank's result out, the plan's transfers through `communicator`.
///
/// Every rank must make the same sequence of calls. Each call ends with a barrier, so no message of one call can
/// be mistaken for one of the next. Shards follow the plan's layout: query, O, dO `[B, n, H, D]`, key, value
/// `[B, n, H_kv, D]`, LSE `[B, H, n]` with n = `positions.count`.
public struct RankAttention: Sendable {
    public let rank: Int
    public let problem: AttentionProblem
    public let forwardPlan: Plan
    public let backwardPlan: Plan
    public let communicator: any Communicator<Tensor>
    public let backend: any AttentionBackend
    /// Post the sends of step t before computing it (the DistFlashAttn overlap).
    public var overlap: Bool

    /// Plans must be verified for `problem` (see `Plans`); both passes use the same layout.
    public init(rank: Int, problem: AttentionProblem, plans: Plans, communicator: any Communicator<Tensor>,
                backend: any AttentionBackend, overlap: Bool = true) {
        (self.rank, self.problem, self.communicator, self.backend, self.overlap) =
            (rank, problem, communicator, backend, overlap)
        (forwardPlan, backwardPlan) = (plans.forward, plans.backward)
    }

    /// The forward and backward plans of one kind for one problem, verified once and shared by every rank.
    public struct Plans: Sendable {
        public let forward: Plan
        public let backward: Plan

        public init(_ kind: Plan.Kind, problem: AttentionProblem, ranks: Int) throws {
            forward = try Plan.make(kind, problem: problem, ranks: ranks, pass: .forward)
            backward = try Plan.make(kind, problem: problem, ranks: ranks, pass: .backward)
            try forward.verify(problem: problem)
            try backward.verify(problem: problem)
            guard (0..<ranks).allSatisfy({ forward.layout.positions(rank: $0) == backward.layout.positions(rank: $0) })
            else {
                throw DistFlashError(.runtime, "\(kind): forward and backward plans shard tokens differently")
            }
        }
    }

    /// Global positions of this rank's tokens `[n]`.
    public var positions: [Int] { forwardPlan.layout.positions(rank: rank) }

    /// O and LSE of this rank's queries over every key they may see.
    public func forward(query: Tensor, key: Tensor, value: Tensor) throws -> AttentionPartial {
        let worker = RankWorker(rank: rank, plan: forwardPlan, problem: problem, backend: HostBlocks(backend),
                                communicator: communicator, overlap: overlap, failAt: nil,
                                own: [.query: query, .key: key, .value: value])
        let outputs = try worker.run()
        return AttentionPartial(output: outputs[.output]!, logSumExp: outputs[.logSumExp]!)
    }

    /// dQ of this rank's queries, dK and dV of its keys and values (summed over every rank's queries).
    public func backward(query: Tensor, key: Tensor, value: Tensor, result: AttentionPartial, outputGrad: Tensor)
        throws -> AttentionGradients {
        let worker = RankWorker(rank: rank, plan: backwardPlan, problem: problem, backend: HostBlocks(backend),
                                communicator: communicator, overlap: overlap, failAt: nil,
                                own: [.query: query, .key: key, .value: value, .output: result.output,
                                      .outputGrad: outputGrad, .logSumExp: result.logSumExp])
        let outputs = try worker.run()
        return AttentionGradients(query: outputs[.queryGrad]!, key: outputs[.keyGrad]!, value: outputs[.valueGrad]!)
    }
}
