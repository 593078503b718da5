import Foundation

/// Exact attention over P ranks following a plan: shards the inputs by the plan's layout, runs one `RankWorker`
/// per rank on its own thread over a communicator, and gathers the results back into full tensors.
///
/// Any rank that fails aborts the communicator, so every other rank stops within the communicator's timeout and
/// the call throws an error that names the failing rank and step (never a hang).
public struct DistributedAttention: Sendable {
    public var plan: Plan.Kind
    public var ranks: Int
    /// Post the sends of step t before computing it (true) or finish communication first (false: the ablation).
    public var overlap = true
    /// Seconds a rank may wait for a message.
    public var timeout: TimeInterval = 60
    /// Simulated link for the in-process communicator (nil: memory speed).
    public var link: LinkModel?
    /// Makes `rank` fail at `step` of the forward pass (a debug aid for testing failure handling).
    public var failure: (rank: Int, step: Int)?
    /// The communicator of one pass, given P and the timeout (nil: in-process mailboxes with `link`).
    public var communicator: (@Sendable (Int, TimeInterval) throws -> any Communicator)?

    public init(plan: Plan.Kind, ranks: Int) {
        self.plan = plan
        self.ranks = ranks
    }

    /// The result of one distributed pass: full tensors plus what each rank measured.
    public struct Outcome<Value: Sendable>: Sendable {
        public var value: Value
        public var plan: Plan
        public var statistics: [RankStatistics]
    }

    /// O and LSE of attention over the whole sequence. Query `[B, S, H, D]`, key/value `[B, S, H_kv, D]`.
    /// `backend(rank)` gives each rank its backend (e.g. a CPU backend with its share of the cores).
    public func forward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                        backend: (Int) -> any AttentionBackend) throws -> Outcome<AttentionPartial> {
        try query.requireShape(problem.queryShape, "Q")
        try key.requireShape(problem.keyValueShape, "K")
        try value.requireShape(problem.keyValueShape, "V")
        let plan = try Plan.make(self.plan, problem: problem, ranks: ranks, pass: .forward)
        try plan.verify(problem: problem)
        let layout = plan.layout
        let (outputs, statistics) = try run(plan, problem, backend: backend) { rank in
            [.query: try layout.shard(query, rank: rank, axis: 1), .key: try layout.shard(key, rank: rank, axis: 1),
             .value: try layout.shard(value, rank: rank, axis: 1)]
        }
        let result = AttentionPartial(output: try layout.unshard(outputs.map { $0[.output]! }, axis: 1),
                                      logSumExp: try layout.unshard(outputs.map { $0[.logSumExp]! }, axis: 2))
        return Outcome(value: result, plan: plan, statistics: statistics)
    }

    /// dQ, dK, dV given the forward's result and dO `[B, S, H, D]`.
    public func backward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                         result: AttentionPartial, outputGrad: Tensor,
                         backend: (Int) -> any AttentionBackend) throws -> Outcome<AttentionGradients> {
        try outputGrad.requireShape(problem.queryShape, "dO")
        let plan = try Plan.make(self.plan, problem: problem, ranks: ranks, pass: .backward)
        try plan.verify(problem: problem)
        let layout = plan.layout
        let (outputs, statistics) = try run(plan, problem, backend: backend) { rank in
            [.query: try layout.shard(query, rank: rank, axis: 1), .key: try layout.shard(key, rank: rank, axis: 1),
             .value: try layout.shard(value, rank: rank, axis: 1),
             .output: try layout.shard(result.output, rank: rank, axis: 1),
             .outputGrad: try layout.shard(outputGrad, rank: rank, axis: 1),
             .logSumExp: try layout.shard(result.logSumExp, rank: rank, axis: 2)]
        }
        let grads = AttentionGradients(query: try layout.unshard(outputs.map { $0[.queryGrad]! }, axis: 1),
                                       key: try layout.unshard(outputs.map { $0[.keyGrad]! }, axis: 1),
                                       value: try layout.unshard(outputs.map { $0[.valueGrad]! }, axis: 1))
        return Outcome(value: grads, plan: plan, statistics: statistics)
    }

    /// Runs every rank of `plan` on its own thread over a fresh in-process communicator.
    private func run(_ plan: Plan, _ problem: AttentionProblem, backend: (Int) -> any AttentionBackend,
                     shards: (Int) throws -> [ShardTensor: Tensor]) throws -> ([[ShardTensor: Tensor]], [RankStatistics]) {
        let communicator = try self.communicator?(ranks, timeout)
            ?? InProcessCommunicator(ranks: ranks, timeout: timeout, link: link)
        let workers = try (0..<ranks).map { rank in
            UncheckedBox(RankWorker(rank: rank, plan: plan, problem: problem, backend: backend(rank),
                                    communicator: communicator, overlap: overlap,
                                    failAt: plan.pass == .forward && failure?.rank == rank ? failure?.step : nil,
                                    own: try shards(rank)))
        }
        let results = try RankThreads.run(ranks: ranks, communicator: communicator, what: "\(plan)") { rank in
            let worker = workers[rank].value
            return UncheckedBox((try worker.run(), worker.statistics))
        }
        return (results.map(\.value.0), results.map(\.value.1))
    }
}

/// Hands a non-Sendable value to exactly one other thread. Invariant: after the hand-off only that thread uses it.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
