import DistFlashAttn
import DistFlashAttnCPU
import Foundation

/// Sequence-parallel training of the LLaMA-style model on P ranks (threads of this process). Every rank holds a
/// replica of the parameters and its shard of every row; the attention is the plan's, across ranks; the gradient
/// is all-reduced. One step t:
/// ```
/// batch = data.batch(step: t)                         tokens, labels [B, S]: a pure function of (seed, t)
/// rank r:  shard_r = batch[:, positions_r]            [B, n_r]  (the plan's layout)
///          loss_r, g_r = model(shard_r; θ)            loss normalised by N = labelled tokens of the whole batch
///          g = Σ_r g_r,  loss = Σ_r loss_r            all-reduce: the same bits on every rank
/// g ← g · min(1, c / ‖g‖₂)                            global-norm clipping
/// θ ← AdamW(θ, g, η(t))                               η: linear warm-up, cosine decay
/// ```
/// The update runs once, here, not on every rank: the ranks' replicas and their reduced gradients are identical,
/// so P identical updates would give P identical copies of this one.
///
/// Everything that decides the numbers — the initial parameters, the data, the schedule — is a function of the
/// configuration's seed and the step, so a run resumed from `checkpoint()` continues on the same trajectory.
public struct Trainer: Sendable {
    public let configuration: TrainingConfiguration
    public let model: ModelConfig
    /// Rows of the full length S.
    public let training: any BatchSource
    /// Rows of the sequence warm-up's length, for its first steps (nil without warm-up).
    public let warmupTraining: (any BatchSource)?
    /// The same task from an unrelated seed stream (`TrainingConfiguration.heldOutSeed`).
    public let heldOut: any BatchSource
    /// Accuracy of guessing (recall: 1 / values), where the task defines one.
    public let chanceAccuracy: Double?
    public let schedule: LearningRateSchedule
    public private(set) var parameters: Parameters
    public private(set) var optimizer: AdamW
    /// Steps taken so far; the next step trains on `training.batch(step: completedSteps)`.
    public private(set) var completedSteps: Int
    /// CPU threads of each rank's dense math and attention kernels.
    public let threadsPerRank: Int
    /// The ranks at the full length, and at the warm-up's length.
    let group: SequenceParallelGroup
    let warmupGroup: SequenceParallelGroup?

    /// A fresh run, or the continuation of `checkpoint` (named `checkpointName` in errors). Throws
    /// `invalidProblem` for a bad configuration, or when a checkpoint's trajectory settings, model or step do not
    /// fit this run.
    public init(_ configuration: TrainingConfiguration, resume checkpoint: TrainingCheckpoint? = nil,
                checkpointName: String = "checkpoint") throws {
        try configuration.validate()
        self.configuration = configuration
        (training, warmupTraining, heldOut, chanceAccuracy) = try configuration.dataSources()
        model = try ModelConfig.preset(configuration.model, vocab: training.vocabularySize)
        schedule = try LearningRateSchedule(peak: configuration.learningRate, warmupSteps: configuration.warmupSteps,
                                            totalSteps: configuration.steps,
                                            minimumRatio: configuration.minimumLearningRateRatio)

        let threadsPerRank = max(1, (configuration.threads ?? CPUBackend.defaultWorkers) / configuration.workers)
        self.threadsPerRank = threadsPerRank
        let (model, mask) = (model, try configuration.attentionMask())
        func makeGroup(batch: Int, sequence: Int) throws -> SequenceParallelGroup {
            let problem = try AttentionProblem(batch: batch, sequence: sequence, heads: model.heads,
                                               kvHeads: model.kvHeads, headDim: model.headDim, mask: mask, dtype: .fp32)
            return try SequenceParallelGroup(plan: configuration.plan, ranks: configuration.workers, problem: problem,
                                             overlap: configuration.overlap, timeout: configuration.timeout) { _ in
                CPUBackend(workers: threadsPerRank)
            }
        }
        group = try makeGroup(batch: configuration.batch, sequence: configuration.sequence)
        warmupGroup = try configuration.sequenceWarmup.map { try makeGroup(batch: $0.batch, sequence: $0.sequence) }

        let hyperparameters = AdamW.Hyperparameters(weightDecay: configuration.weightDecay)
        guard let checkpoint else {
            parameters = model.initialParameters(seed: configuration.seed)
            optimizer = try AdamW(parameters: parameters, hyperparameters: hyperparameters)
            completedSteps = 0
            return
        }
        try checkpoint.check(resuming: configuration, model: model, name: checkpointName)
        parameters = checkpoint.parameters
        optimizer = try AdamW(state: checkpoint.optimizer, hyperparameters: hyperparameters)
        completedSteps = checkpoint.step
    }

    public var isFinished: Bool { completedSteps >= configuration.steps }

    /// Whether step `step` (0-based) trains on the warm-up's short rows.
    public func isWarmup(step: Int) -> Bool { configuration.isWarmup(step: step) }

    /// Rows and their length at step `step` (0-based): the warm-up's, or B and S.
    public func shape(step: Int) -> (batch: Int, sequence: Int) {
        if isWarmup(step: step), let warmup = configuration.sequenceWarmup { return (warmup.batch, warmup.sequence) }
        return (configuration.batch, configuration.sequence)
    }

    /// One step: forward and backward on every rank, all-reduce, clip, AdamW. Throws `runtime` (parameters
    /// unchanged) if the gradient is not finite, and `invalidProblem` once every step is taken.
    @discardableResult
    public mutating func step() throws -> StepReport {
        guard !isFinished else {
            throw DistFlashError(.invalidProblem, "the run is complete: all \(configuration.steps) steps are taken; "
                + "raise --steps for a new run")
        }
        let clock = ContinuousClock.now
        var reduced = try reducedGradients(step: completedSteps)
        let norm = try GradientClipping.clip(&reduced.gradients, maxNorm: configuration.maxGradientNorm)
        guard norm.isFinite else {
            throw DistFlashError(.runtime, "step \(completedSteps + 1): the gradient norm is \(norm) (loss "
                + "\(reduced.loss)); training diverged: lower --lr or --clip, or resume from an earlier checkpoint")
        }
        let rate = schedule.rate(at: completedSteps)
        try optimizer.update(&parameters, gradients: reduced.gradients, learningRate: rate)
        completedSteps += 1
        let elapsed = ContinuousClock.now - clock
        let shape = shape(step: completedSteps - 1)
        return StepReport(step: completedSteps, loss: reduced.loss,
                          accuracy: Double(reduced.correct) / Double(reduced.labelled), labelled: reduced.labelled,
                          gradientNorm: norm, learningRate: rate, sequence: shape.sequence,
                          tokens: shape.batch * shape.sequence, seconds: elapsed.seconds)
    }

    /// The loss, correct predictions and all-reduced gradient of training batch `step` at the current parameters,
    /// with the checkpoint strategy `strategy` (default: the configuration's). Nothing is updated.
    public func reducedGradients(step: Int, strategy: CheckpointStrategy? = nil) throws -> ReducedGradients {
        let (ranks, source) = isWarmup(step: step) ? (warmupGroup!, warmupTraining!) : (group, training)
        return try ranks.reducedGradients(model: model, parameters: parameters,
                                          batch: source.batch(step: step, size: shape(step: step).batch),
                                          strategy: strategy ?? configuration.checkpoint,
                                          threadsPerRank: threadsPerRank)
    }

    /// Loss and accuracy over `configuration.evaluationBatches` held-out batches of the full length S (always the
    /// same ones, so evaluations are comparable across steps and runs; during a sequence warm-up they show how far
    /// the short-context model is from the task). Forward only.
    public func evaluate() throws -> Evaluation {
        let clock = ContinuousClock.now
        let batches = (0..<configuration.evaluationBatches).map { heldOut.batch(step: $0, size: configuration.batch) }
        let (loss, correct, labelled) = try group.loss(model: model, parameters: parameters, batches: batches,
                                                       threadsPerRank: threadsPerRank)
        return Evaluation(step: completedSteps, loss: loss, accuracy: Double(correct) / Double(labelled),
                          labelled: labelled, seconds: (ContinuousClock.now - clock).seconds)
    }

    /// Parameters, optimizer state, step and the trajectory settings: what `init(_:resume:)` continues from.
    public func checkpoint() throws -> TrainingCheckpoint {
        try TrainingCheckpoint(parameters: parameters, optimizer: optimizer.state, step: completedSteps,
                               seed: configuration.seed, task: configuration.taskName,
                               configuration: configuration.trajectoryJSON())
    }
}
