import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Foundation

/// `Trainer`'s step on P GPUs driven by this process (one thread per GPU): every rank holds a replica of the
/// parameters and its shard of every row (the plan's layout), runs the GPU model on it with the plan's attention
/// over NCCL, and the ZeRO-1 optimizer reduces the gradients, clips and updates its shard, and gathers the
/// weights. Data, schedule and initial parameters are the CPU trainer's (functions of the seed and the step), so
/// the loss trajectories can be compared.
public final class DeviceTrainer: @unchecked Sendable {
    // Invariant: used from one thread at a time (its rank threads run inside `step`).
    public let configuration: TrainingConfiguration
    public let model: ModelConfig
    public let schedule: LearningRateSchedule
    public private(set) var completedSteps: Int
    let training: any BatchSource
    let heldOut: any BatchSource
    /// Accuracy of guessing (recall: 1 / values), where the task defines one.
    public let chanceAccuracy: Double?
    let problem: AttentionProblem
    let positions: [[Int]]
    let ranks: [RankState]
    let communicator: NCCLCommunicator?

    /// One rank's GPU, model and optimizer.
    struct RankState: @unchecked Sendable {
        let model: DeviceLlamaModel
        let optimizer: ShardedOptimizer
    }

    /// `devices[r]` runs rank r; a fresh run, or the continuation of `checkpoint` (named `checkpointName` in
    /// errors; checked as the CPU trainer checks it). Throws `invalidProblem` for settings the GPU path does not
    /// take yet.
    public init(_ configuration: TrainingConfiguration, devices: [CUDADevice], resume checkpoint: TrainingCheckpoint? = nil,
                checkpointName: String = "checkpoint") throws {
        try configuration.validate()
        guard configuration.sequenceWarmup == nil else {
            throw DistFlashError(.invalidProblem, "--seq-warmup: the GPU trainer does not run a sequence warm-up yet")
        }
        guard configuration.workers == devices.count else {
            throw DistFlashError(.invalidProblem, "workers P = \(configuration.workers) with \(devices.count) GPUs: "
                + "one rank per GPU")
        }
        self.configuration = configuration
        let sources = try configuration.dataSources()
        (training, heldOut, chanceAccuracy) = (sources.training, sources.heldOut, sources.chance)
        model = try ModelConfig.preset(configuration.model, vocab: training.vocabularySize)
        schedule = try LearningRateSchedule(peak: configuration.learningRate, warmupSteps: configuration.warmupSteps,
                                            totalSteps: configuration.steps,
                                            minimumRatio: configuration.minimumLearningRateRatio)
        let problem = try AttentionProblem(batch: configuration.batch, sequence: configuration.sequence,
                                       heads: model.heads, kvHeads: model.kvHeads, headDim: model.headDim,
                                       mask: try configuration.attentionMask(), dtype: .bf16)
        try checkpoint?.check(resuming: configuration, model: model, name: checkpointName)
        let parameters = checkpoint?.parameters ?? model.initialParameters(seed: configuration.seed)
        completedSteps = checkpoint?.step ?? 0
        let hyperparameters = AdamW.Hyperparameters(weightDecay: configuration.weightDecay)
        let count = devices.count
        let communicator = count > 1 ? try NCCLCommunicator(devices: devices, timeout: configuration.timeout) : nil
        let plans = try RankAttention.Plans(configuration.plan, problem: problem, ranks: count)
        positions = (0..<count).map { plans.forward.layout.positions(rank: $0) }
        (self.problem, self.communicator) = (problem, communicator)
        let (model, strategy, overlap, saved) = (model, configuration.checkpoint, configuration.overlap, checkpoint?.optimizer)
        ranks = try devices.enumerated().map { rank, device in
            // The plan's executor reads (and frees) its primitives' timings after every pass; one GPU alone never does.
            let attention: any DeviceAttention = communicator.map {
                PlanDeviceAttention(rank: rank, problem: problem, plans: plans, blocks: CUDABlocks(device: device),
                                    communicator: $0, overlap: overlap)
            } ?? SingleGPUAttention(blocks: CUDABlocks(device: device, timing: false), mask: problem.mask)
            return RankState(model: try DeviceLlamaModel(config: model, attention: attention,
                                                         checkpoint: strategy, device: device),
                             optimizer: try ShardedOptimizer(parameters, rank: rank, ranks: count,
                                                             hyperparameters: hyperparameters,
                                                             resume: saved, device: device))
        }
    }

    public var isFinished: Bool { completedSteps >= configuration.steps }

    /// One step: forward and backward on every rank, ZeRO-1 reduce, clip, AdamW, gather.
    @discardableResult
    public func step() throws -> StepReport {
        guard !isFinished else {
            throw DistFlashError(.invalidProblem, "the run is complete: all \(configuration.steps) steps are taken")
        }
        let clock = ContinuousClock.now
        let batch = training.batch(step: completedSteps, size: configuration.batch)
        guard batch.labeledCount > 0 else {
            throw DistFlashError(.invalidProblem, "step \(completedSteps + 1): the batch has no labelled token to "
                + "learn from (check the task's settings)")
        }
        let rate = schedule.rate(at: completedSteps)
        let (ranks, positions, communicator) = (self.ranks, self.positions, self.communicator)
        let maxNorm = configuration.maxGradientNorm
        let work: @Sendable (Int) throws -> (loss: Double, correct: Int, norm: Float) = { rank in
            let state = ranks[rank]
            let shard = Self.shard(batch, positions[rank])
            try state.optimizer.zeroGradients()
            let cache = try state.model.forward(shard, positions: positions[rank], lossNormalizer: batch.labeledCount,
                                                weights: state.optimizer.weights)
            let (loss, correct) = (cache.loss, cache.correctPredictions)
            try state.model.backward(cache, weights: state.optimizer.weights, into: state.optimizer.gradients)
            let norm = try state.optimizer.update(learningRate: rate, maxNorm: maxNorm, communicator: communicator)
            return (loss, correct, norm)
        }
        let results: [(loss: Double, correct: Int, norm: Float)]
        if let communicator {
            results = try RankThreads.run(ranks: ranks.count, communicator: communicator,
                                          what: "GPU training step \(completedSteps + 1)", work)
        } else {
            results = [try work(0)]
        }
        let norm = results[0].norm
        guard norm.isFinite else {
            throw DistFlashError(.runtime, "step \(completedSteps + 1): the gradient norm is \(norm); training "
                + "diverged: lower --lr or --clip")
        }
        completedSteps += 1
        let labelled = batch.labeledCount
        return StepReport(step: completedSteps, loss: results.reduce(0) { $0 + $1.loss },
                          accuracy: Double(results.reduce(0) { $0 + $1.correct }) / Double(labelled),
                          labelled: labelled, gradientNorm: norm, learningRate: rate,
                          sequence: configuration.sequence, tokens: configuration.batch * configuration.sequence,
                          seconds: (ContinuousClock.now - clock).seconds)
    }

    /// Loss and accuracy over `configuration.evaluationBatches` held-out batches (the CPU trainer's), forward only.
    public func evaluate() throws -> Evaluation {
        let clock = ContinuousClock.now
        let (ranks, positions) = (self.ranks, self.positions)
        var (loss, correct, labelled) = (0.0, 0, 0)
        for index in 0..<configuration.evaluationBatches {
            let batch = heldOut.batch(step: index, size: configuration.batch)
            let work: @Sendable (Int) throws -> (loss: Double, correct: Int) = { rank in
                let state = ranks[rank]
                let cache = try state.model.forward(Self.shard(batch, positions[rank]), positions: positions[rank],
                                                    lossNormalizer: batch.labeledCount, weights: state.optimizer.weights)
                return (cache.loss * Double(batch.labeledCount), cache.correctPredictions)
            }
            let results = try communicator.map {
                try RankThreads.run(ranks: ranks.count, communicator: $0, what: "GPU evaluation", work)
            } ?? [try work(0)]
            loss += results.reduce(0) { $0 + $1.loss }
            correct += results.reduce(0) { $0 + $1.correct }
            labelled += batch.labeledCount
        }
        return Evaluation(step: completedSteps, loss: loss / Double(max(labelled, 1)),
                          accuracy: Double(correct) / Double(max(labelled, 1)), labelled: labelled,
                          seconds: (ContinuousClock.now - clock).seconds)
    }

    /// The current weights (rank 0's replica; every rank holds the same after an update).
    public func parameters() throws -> Parameters { try ranks[0].optimizer.weights.download() }

    /// Parameters, the optimizer state gathered from every rank's shard, step and trajectory settings: what
    /// `init(_:devices:resume:)` — or the CPU trainer — continues from.
    public func checkpoint() throws -> TrainingCheckpoint {
        try TrainingCheckpoint(parameters: try parameters(),
                               optimizer: try AdamWState.gathered(try ranks.map { try $0.optimizer.state() }),
                               step: completedSteps, seed: configuration.seed, task: configuration.taskName,
                               configuration: try configuration.trajectoryJSON())
    }

    /// The most device memory any rank held at once since the last call, in bytes.
    public func peakMemoryBytes() throws -> Int {
        try ranks.map { try $0.optimizer.weights.master[0].device.peakMemoryBytes(reset: true) }.max() ?? 0
    }

    /// Rows `[B, n]` of a batch `[B, S]` at `positions` (labels were shifted before sharding, so the label of a
    /// shard's last token travels with it).
    static func shard(_ batch: TokenBatch, _ positions: [Int]) -> TokenBatch {
        var (tokens, labels): ([Int32], [Int32]) = ([], [])
        for b in 0..<batch.batch {
            for p in positions {
                tokens.append(batch.tokens[b * batch.sequence + p])
                labels.append(batch.labels[b * batch.sequence + p])
            }
        }
        return TokenBatch(batch: batch.batch, sequence: positions.count, tokens: tokens, labels: labels)
    }
}
