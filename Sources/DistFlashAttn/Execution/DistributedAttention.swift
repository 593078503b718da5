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
    public var communicator: (@Sendable (Int, TimeInterval) throws -> any Communicator<Tensor>)?

    public init(plan: Plan.Kind, ranks: Int) {
        self.plan = plan
        self.ranks = ranks
    }

    /// The result of one distributed pass: full tensors plus what each rank measured.
    public struct Outcome<Value: Sendable>: Sendable {
        public var value: Value
        public var plan: Plan
        public var statistics: [RankStatistics]
        /// Wall-clock seconds from the first rank's start to the last rank's end (shards already in place).
        public var seconds: Double

        public init(value: Value, plan: Plan, statistics: [RankStatistics], seconds: Double) {
            (self.value, self.plan, self.statistics, self.seconds) = (value, plan, statistics, seconds)
        }
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
        let ranks = try run(plan, problem, backends: { HostBlocks(backend($0)) }, communicator: hostCommunicator()) {
            try layout.shards([.query: query, .key: key, .value: value], rank: $0)
        }
        let result = AttentionPartial(output: try layout.unshard(.output, from: ranks.value),
                                      logSumExp: try layout.unshard(.logSumExp, from: ranks.value))
        return Outcome(value: result, plan: plan, statistics: ranks.statistics, seconds: ranks.seconds)
    }

    /// dQ, dK, dV given the forward's result and dO `[B, S, H, D]`.
    public func backward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                         result: AttentionPartial, outputGrad: Tensor,
                         backend: (Int) -> any AttentionBackend) throws -> Outcome<AttentionGradients> {
        try outputGrad.requireShape(problem.queryShape, "dO")
        let plan = try Plan.make(self.plan, problem: problem, ranks: ranks, pass: .backward)
        try plan.verify(problem: problem)
        let layout = plan.layout
        let ranks = try run(plan, problem, backends: { HostBlocks(backend($0)) }, communicator: hostCommunicator()) {
            try layout.shards([.query: query, .key: key, .value: value, .output: result.output,
                               .outputGrad: outputGrad, .logSumExp: result.logSumExp], rank: $0)
        }
        let grads = AttentionGradients(query: try layout.unshard(.queryGrad, from: ranks.value),
                                       key: try layout.unshard(.keyGrad, from: ranks.value),
                                       value: try layout.unshard(.valueGrad, from: ranks.value))
        return Outcome(value: grads, plan: plan, statistics: ranks.statistics, seconds: ranks.seconds)
    }

    private func hostCommunicator() throws -> any Communicator<Tensor> {
        try communicator?(ranks, timeout) ?? InProcessCommunicator(ranks: ranks, timeout: timeout, link: link)
    }

    /// Runs every rank of `plan` on its own thread, each on its own backend's blocks: `shards(rank)` gives the
    /// rank's inputs (forward Q, K, V; backward also O, dO, LSE); the value is each rank's outputs (forward
    /// .output, .logSumExp; backward .queryGrad, .keyGrad, .valueGrad). Backends whose blocks live on a device keep
    /// every tensor there, so the caller places the shards and reads the results.
    public func run<Backend: BlockBackend>(_ plan: Plan, _ problem: AttentionProblem, backends: (Int) -> Backend,
                                           communicator: any Communicator<Backend.Block>,
                                           shards: (Int) throws -> [ShardTensor: Backend.Block]) throws
        -> Outcome<[[ShardTensor: Backend.Block]]> {
        let workers = try (0..<ranks).map { rank in
            UncheckedBox(RankWorker(rank: rank, plan: plan, problem: problem, backend: backends(rank),
                                    communicator: communicator, overlap: overlap,
                                    failAt: plan.pass == .forward && failure?.rank == rank ? failure?.step : nil,
                                    own: try shards(rank)))
        }
        let clock = ContinuousClock.now
        let results = try RankThreads.run(ranks: ranks, communicator: communicator, what: "\(plan)") { rank in
            let worker = workers[rank].value
            return UncheckedBox((try worker.run(), worker.statistics))
        }
        let seconds = (ContinuousClock.now - clock).seconds
        return Outcome(value: results.map(\.value.0), plan: plan, statistics: results.map(\.value.1), seconds: seconds)
    }
}

extension DistributedAttention {
    /// Runs only rank `rank` of `plan`, on the calling thread: the other ranks run elsewhere (other processes),
    /// reached through `communicator`. On failure the communicator is aborted before the error is rethrown, so
    /// the peers stop waiting for this rank.
    public func runRank<Backend: BlockBackend>(_ rank: Int, _ plan: Plan, _ problem: AttentionProblem,
                                               backend: Backend, communicator: any Communicator<Backend.Block>,
                                               shards: [ShardTensor: Backend.Block]) throws
        -> (outputs: [ShardTensor: Backend.Block], statistics: RankStatistics, seconds: Double) {
        let worker = RankWorker(rank: rank, plan: plan, problem: problem, backend: backend,
                                communicator: communicator, overlap: overlap,
                                failAt: plan.pass == .forward && failure?.rank == rank ? failure?.step : nil,
                                own: shards)
        let clock = ContinuousClock.now
        do {
            let outputs = try worker.run()
            return (outputs, worker.statistics, (ContinuousClock.now - clock).seconds)
        } catch {
            let failure = error as? DistFlashError ?? DistFlashError(.runtime, "rank \(rank): \(error)")
            communicator.abort(failure)
            throw failure
        }
    }
}

/// Hands a non-Sendable value to exactly one other thread. Invariant: after the hand-off only that thread uses it.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
