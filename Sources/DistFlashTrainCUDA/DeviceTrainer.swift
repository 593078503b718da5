import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Foundation

/// `Trainer`'s step on P GPUs: every rank holds a replica of the parameters and its shard of every row (the
/// plan's layout), runs the GPU model on it with the plan's attention over NCCL, and the ZeRO-1 optimizer reduces
/// the gradients, clips and updates its shard, and gathers the weights. The ranks are either threads of this
/// process (one per GPU) or this process alone among P processes started by a launcher. Data, schedule and
/// initial parameters are the CPU trainer's (functions of the seed and the step), so loss trajectories compare.
public final class DeviceTrainer: @unchecked Sendable {
    // Invariant: used from one thread at a time (its rank threads run inside `step` and `evaluate`).
    public let configuration: TrainingConfiguration
    public let model: ModelConfig
    public let schedule: LearningRateSchedule
    public private(set) var completedSteps: Int
    /// Accuracy of guessing (recall: 1 / values), where the task defines one.
    public let chanceAccuracy: Double?
    let training: any BatchSource
    /// Rows of the sequence warm-up's length, for its first steps (nil without warm-up).
    let warmupTraining: (any BatchSource)?
    let heldOut: any BatchSource
    /// The ranks' models at the full length, and at the warm-up's.
    let full: Length
    let warmup: Length?
    /// This process's ranks' optimizers (parameters, gradients, ZeRO-1 shard), by global rank.
    let local: [Int: ShardedOptimizer]
    let communicator: NCCLCommunicator?
    /// Whether other processes hold the other ranks.
    let spansProcesses: Bool

    /// Where the ranks run.
    public enum Placement {
        /// Rank r on `devices[r]`, every rank a thread of this process.
        case devices([CUDADevice])
        /// This process is rank `launch.rank` of `launch.worldSize`, on GPU `launch.localRank`.
        case process(LaunchEnvironment)
    }

    /// The ranks' models for rows of one length: the plan's layout decides each rank's positions.
    struct Length: @unchecked Sendable {
        let batch: Int
        let positions: [[Int]]
        /// This process's ranks' models, by global rank (each with its attention for this length).
        let models: [Int: DeviceLlamaModel]
    }

    public convenience init(_ configuration: TrainingConfiguration, devices: [CUDADevice],
                            resume checkpoint: TrainingCheckpoint? = nil, checkpointName: String = "checkpoint") throws {
        try self.init(configuration, placement: .devices(devices), resume: checkpoint, checkpointName: checkpointName)
    }

    /// A fresh run, or the continuation of `checkpoint` (named `checkpointName` in errors; checked as the CPU
    /// trainer checks it).
    public init(_ configuration: TrainingConfiguration, placement: Placement, resume checkpoint: TrainingCheckpoint? = nil,
                checkpointName: String = "checkpoint") throws {
        try configuration.validate()
        let ranksHere: [(rank: Int, device: CUDADevice)]
        let worldSize: Int
        switch placement {
        case .devices(let devices):
            (ranksHere, worldSize, spansProcesses) = (Array(devices.enumerated().map { ($0, $1) }), devices.count, false)
            communicator = devices.count > 1 ? try NCCLCommunicator(devices: devices, timeout: configuration.timeout) : nil
        case .process(let launch):
            let device = try CUDADevice(ordinal: launch.localRank)
            (ranksHere, worldSize, spansProcesses) = ([(launch.rank, device)], launch.worldSize, true)
            communicator = try .joining(launch, device: device, timeout: configuration.timeout)
        }
        guard configuration.workers == worldSize else {
            throw DistFlashError(.invalidProblem, "workers P = \(configuration.workers) with \(worldSize) GPU ranks: "
                + "one rank per GPU")
        }
        self.configuration = configuration
        let sources = try configuration.dataSources()
        (training, warmupTraining, heldOut, chanceAccuracy) = (sources.training, sources.warmup, sources.heldOut,
                                                               sources.chance)
        model = try ModelConfig.preset(configuration.model, vocab: training.vocabularySize)
        schedule = try LearningRateSchedule(peak: configuration.learningRate, warmupSteps: configuration.warmupSteps,
                                            totalSteps: configuration.steps,
                                            minimumRatio: configuration.minimumLearningRateRatio)
        try checkpoint?.check(resuming: configuration, model: model, name: checkpointName)
        let parameters = checkpoint?.parameters ?? model.initialParameters(seed: configuration.seed)
        completedSteps = checkpoint?.step ?? 0
        let hyperparameters = AdamW.Hyperparameters(weightDecay: configuration.weightDecay)
        let (saved, embedding) = (checkpoint?.optimizer, model.embeddingSlot)
        local = Dictionary(uniqueKeysWithValues: try ranksHere.map { rank, device in
            (rank, try ShardedOptimizer(parameters, rank: rank, ranks: worldSize, hyperparameters: hyperparameters,
                                        resume: saved, fp32Only: [embedding],
                                        residentBF16: !configuration.leanWeights, device: device))
        })
        let (model, communicator) = (model, communicator)
        func length(batch: Int, sequence: Int) throws -> Length {
            let problem = try AttentionProblem(batch: batch, sequence: sequence, heads: model.heads,
                                               kvHeads: model.kvHeads, headDim: model.headDim,
                                               mask: try configuration.attentionMask(), dtype: .bf16)
            let plans = try RankAttention.Plans(configuration.plan, problem: problem, ranks: worldSize)
            let models = try ranksHere.map { rank, device in
                // The plan's executor reads (and frees) its primitives' timings after every pass; one GPU never does.
                let attention: any DeviceAttention = communicator.map {
                    PlanDeviceAttention(rank: rank, problem: problem, kind: configuration.plan, plans: plans,
                                        blocks: CUDABlocks(device: device),
                                        communicator: $0, overlap: configuration.overlap)
                } ?? SingleGPUAttention(blocks: CUDABlocks(device: device, timing: false), mask: problem.mask)
                return (rank, try DeviceLlamaModel(config: model, attention: attention,
                                                   checkpoint: configuration.checkpoint, device: device,
                                                   offload: configuration.offload,
                                                   kernelTimes: configuration.kernelTimes))
            }
            return Length(batch: batch, positions: (0..<worldSize).map { plans.forward.layout.positions(rank: $0) },
                          models: Dictionary(uniqueKeysWithValues: models))
        }
        full = try length(batch: configuration.batch, sequence: configuration.sequence)
        warmup = try configuration.sequenceWarmup.map { try length(batch: $0.batch, sequence: $0.sequence) }
    }

    /// Whether this process reports and saves for the run (it holds rank 0).
    public var reportsResults: Bool { local[0] != nil }

    /// Whether any rank of the run says `flag` (an interrupt, a failed write): every process calls it at the same
    /// point and gets the same answer, so they stop, or go on, together.
    public func anyRank(_ flag: Bool) throws -> Bool {
        guard spansProcesses, let communicator, let (rank, optimizer) = local.first else { return flag }
        return try communicator.allReduceSum([flag ? 1 : 0], rank: rank, device: optimizer.device)[0] > 0
    }

    public var isFinished: Bool { completedSteps >= configuration.steps }

    /// One step: forward and backward on every rank, ZeRO-1 reduce, clip, AdamW, gather.
    @discardableResult
    public func step() throws -> StepReport {
        guard !isFinished else {
            throw DistFlashError(.invalidProblem, "the run is complete: all \(configuration.steps) steps are taken")
        }
        let clock = ContinuousClock.now
        let (source, length) = configuration.isWarmup(step: completedSteps) ? (warmupTraining!, warmup!) : (training, full)
        let batch = source.batch(step: completedSteps, size: length.batch)
        guard batch.labeledCount > 0 else {
            throw DistFlashError(.invalidProblem, "step \(completedSteps + 1): the batch has no labelled token to "
                + "learn from (check the task's settings)")
        }
        let rate = schedule.rate(at: completedSteps)
        let (local, maxNorm) = (self.local, configuration.maxGradientNorm)
        let results = try eachRank("GPU training step \(completedSteps + 1)") { rank in
            let (optimizer, model, positions) = (local[rank]!, length.models[rank]!, length.positions[rank])
            let cache = try model.forward(batch.columns(positions), positions: positions,
                                          lossNormalizer: batch.labeledCount, weights: optimizer.weights)
            let (loss, correct) = (cache.loss, cache.correctPredictions)
            try model.backward(consume cache, weights: optimizer.weights, into: optimizer.gradients)
            let norm = try model.timed("optimizer") {
                try optimizer.update(learningRate: rate, maxNorm: maxNorm, communicator: self.communicator)
            }
            return (loss: loss, correct: Double(correct), norm: norm, phases: try model.phaseSeconds())
        }
        let norm = results[0].norm
        guard norm.isFinite else {
            throw DistFlashError(.runtime, "step \(completedSteps + 1): the gradient norm is \(norm); training "
                + "diverged: lower --lr or --clip")
        }
        completedSteps += 1  // the update is made on every rank: count it before anything else can fail
        let (loss, correct) = try sums(results.map { [$0.loss, $0.correct] })
        let labelled = batch.labeledCount
        return StepReport(step: completedSteps, loss: loss, accuracy: correct / Double(labelled),
                          labelled: labelled, gradientNorm: norm, learningRate: rate,
                          sequence: batch.sequence, tokens: batch.batch * batch.sequence,
                          seconds: (ContinuousClock.now - clock).seconds, phaseSeconds: results[0].phases)
    }

    /// Loss and accuracy over `configuration.evaluationBatches` held-out batches (the CPU trainer's), forward only.
    public func evaluate() throws -> Evaluation {
        let clock = ContinuousClock.now
        let (local, full) = (self.local, self.full)
        var (loss, correct, labelled) = (0.0, 0.0, 0)
        for index in 0..<configuration.evaluationBatches {
            let batch = heldOut.batch(step: index, size: configuration.batch)
            let results = try eachRank("GPU evaluation") { rank in
                let positions = full.positions[rank]
                let cache = try full.models[rank]!.forward(batch.columns(positions), positions: positions,
                                                           lossNormalizer: batch.labeledCount,
                                                           weights: local[rank]!.weights, backward: false)
                _ = try full.models[rank]!.phaseSeconds()  // an evaluation's phases are not a step's
                return [cache.loss * Double(batch.labeledCount), Double(cache.correctPredictions)]
            }
            let (batchLoss, batchCorrect) = try sums(results)
            (loss, correct, labelled) = (loss + batchLoss, correct + batchCorrect, labelled + batch.labeledCount)
        }
        return Evaluation(step: completedSteps, loss: loss / Double(max(labelled, 1)),
                          accuracy: correct / Double(max(labelled, 1)), labelled: labelled,
                          seconds: (ContinuousClock.now - clock).seconds)
    }

    /// The current weights (every rank holds the same after an update).
    public func parameters() throws -> Parameters { try local.values.first!.weights.download() }

    /// Parameters, the optimizer state gathered from every rank's shard, step and trajectory settings: what
    /// `init(_:devices:resume:)` — or the CPU trainer — continues from.
    public func checkpoint() throws -> TrainingCheckpoint {
        try TrainingCheckpoint(parameters: try parameters(),
                               optimizer: try gatheredOptimizerState(),
                               step: completedSteps, seed: configuration.seed, task: configuration.taskName,
                               configuration: try configuration.trajectoryJSON())
    }

    /// The most device memory any of this process's ranks held at once since the last call, in bytes.
    public func peakMemoryBytes() throws -> Int {
        try local.values.map { try $0.device.peakMemoryBytes(reset: true) }.max() ?? 0
    }

    /// The whole optimizer state: this process's ranks' shards joined, or (across processes) gathered over NCCL
    /// (every process must call it).
    private func gatheredOptimizerState() throws -> AdamWState {
        if spansProcesses, let communicator { return try local.values.first!.gatheredState(communicator) }
        return try AdamWState.gathered(try local.keys.sorted().map { try local[$0]!.state() })
    }

    /// `work(rank)` for every rank of this process — as threads when it holds several, bounded by the
    /// communicator's timeout — and the results in rank order. A failing rank aborts the communicator: this
    /// process's other ranks stop at once, other processes' ranks at their next wait's timeout.
    private func eachRank<T: Sendable>(_ what: String, _ work: @escaping @Sendable (Int) throws -> T) throws -> [T] {
        guard let communicator else { return [try work(0)] }
        guard spansProcesses else { return try RankThreads.run(ranks: local.count, communicator: communicator, what: what, work) }
        let rank = local.keys.first!
        do {
            return [try work(rank)]
        } catch {
            let failure = error as? DistFlashError ?? DistFlashError(.runtime, "rank \(rank): \(error)")
            communicator.abort(failure)
            throw failure
        }
    }

    /// Column sums of the ranks' figures: over this process's ranks, then over every process.
    private func sums(_ rows: [[Double]]) throws -> (Double, Double) {
        var total = rows.reduce([0.0, 0.0]) { [$0[0] + $1[0], $0[1] + $1[1]] }
        if spansProcesses, let communicator, let (rank, optimizer) = local.first {
            total = try communicator.allReduceSum(total, rank: rank, device: optimizer.device)
        }
        return (total[0], total[1])
    }
}
