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
    /// Whether any process of the run says `flag`; every process calls it at the same point.
    func anyRank(_ flag: Bool) throws -> Bool
}

extension Trainer: TrainingRun {
    var reportsResults: Bool { true }
    func deviceFigures(_ report: StepReport) throws -> (mfu: Double, peakBytes: Int)? { nil }
    func anyRank(_ flag: Bool) throws -> Bool { flag }
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
    func anyRank(_ flag: Bool) throws -> Bool { try trainer.anyRank(flag) }

    /// Across processes the peak is this process's GPU's.
    func deviceFigures(_ report: StepReport) throws -> (mfu: Double, peakBytes: Int)? {
        let flops = try Self.modelFLOPs(rows: report.tokens / report.sequence, sequence: report.sequence,
                                        mask: try configuration.attentionMask(), model)
        return (flops / report.seconds / (Double(configuration.workers) * peakTFLOPS * 1e12), try trainer.peakMemoryBytes())
    }

    /// Model FLOPs of one step of `rows` × `sequence` tokens (what MFU counts: no recomputation): 6 per weight of
    /// every GEMM per token, plus the attention's forward and backward (3.5 × its forward, which the mask's
    /// visible pairs decide) in every layer.
    static func modelFLOPs(rows: Int, sequence: Int, mask: AttentionMask, _ model: ModelConfig) throws -> Double {
        let gemmWeights = Double(model.parameterCount - model.vocab * model.dim - (2 * model.layers + 1) * model.dim)
        let attention = try AttentionProblem(batch: rows, sequence: sequence, heads: model.heads,
                                             kvHeads: model.kvHeads, headDim: model.headDim, mask: mask, dtype: .bf16)
        return 6 * gemmWeights * Double(rows * sequence) + Double(model.layers) * 3.5 * attention.forwardFLOPs
    }
}
