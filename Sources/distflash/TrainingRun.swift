import DistFlashAttn
import DistFlashTrain
import DistFlashTrainCUDA

/// What `distflash train`'s loop drives: the CPU trainer, or the GPU trainer with its per-step device figures.
protocol TrainingRun {
    var configuration: TrainingConfiguration { get }
    var model: ModelConfig { get }
    var completedSteps: Int { get }
    var isFinished: Bool { get }
    /// Whether this process prints and writes files for the run (every rank still takes part in each call).
    var reportsResults: Bool { get }
    mutating func step() throws -> StepReport
    func evaluate() throws -> Evaluation
    func checkpoint() throws -> TrainingCheckpoint
    /// The step's model FLOP utilisation and the largest device memory any GPU held (nil on CPUs).
    func deviceFigures(_ report: StepReport) throws -> (mfu: Double, peakBytes: Int)?
}

extension Trainer: TrainingRun {
    var reportsResults: Bool { true }
    func deviceFigures(_ report: StepReport) throws -> (mfu: Double, peakBytes: Int)? { nil }
}

/// The GPU trainer as a `TrainingRun`: MFU against `peakTFLOPS` per GPU.
struct GPUTrainingRun: TrainingRun {
    let trainer: DeviceTrainer
    let peakTFLOPS: Double

    var configuration: TrainingConfiguration { trainer.configuration }
    var model: ModelConfig { trainer.model }
    var completedSteps: Int { trainer.completedSteps }
    var isFinished: Bool { trainer.isFinished }
    var reportsResults: Bool { trainer.reportsResults }
    func step() throws -> StepReport { try trainer.step() }
    func evaluate() throws -> Evaluation { try trainer.evaluate() }
    func checkpoint() throws -> TrainingCheckpoint { try trainer.checkpoint() }

    func deviceFigures(_ report: StepReport) throws -> (mfu: Double, peakBytes: Int)? {
        let flops = try Self.modelFLOPs(configuration, model)
        return (flops / report.seconds / (Double(configuration.workers) * peakTFLOPS * 1e12), try trainer.peakMemoryBytes())
        // (Across processes the peak is this process's GPU's.)
    }

    /// Model FLOPs of one step (what MFU counts: no recomputation): 6 per weight of every GEMM per token, plus the
    /// attention's forward and backward (3.5 × its forward, which the mask's visible pairs decide) in every layer.
    static func modelFLOPs(_ c: TrainingConfiguration, _ model: ModelConfig) throws -> Double {
        let tokens = Double(c.batch * c.sequence)
        let gemmWeights = Double(model.parameterCount - model.vocab * model.dim - (2 * model.layers + 1) * model.dim)
        let attention = try AttentionProblem(batch: c.batch, sequence: c.sequence, heads: model.heads,
                                             kvHeads: model.kvHeads, headDim: model.headDim,
                                             mask: try c.attentionMask(), dtype: .bf16)
        return 6 * gemmWeights * tokens + Double(model.layers) * 3.5 * attention.forwardFLOPs
    }
}
