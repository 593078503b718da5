import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Foundation

/// The LLaMA-style model of `LlamaModel` on one GPU: the same layers and checkpoint strategies, with bf16 GEMM
/// operands and fp32 master weights, residual stream, statistics and gradients. One rank's shard of the sequence
/// goes in; the attention (`DeviceAttention`) brings the other ranks' keys when there are any.
public struct DeviceLlamaModel: Sendable {
    public let config: ModelConfig
    public let attention: any DeviceAttention
    public let checkpoint: CheckpointStrategy
    let ops: DeviceOps
    /// The rotary tables of the last positions seen (a rank's positions are the same every step).
    private let rotary = RotaryCache()

    /// Rows of the MLP's `[T, F]` intermediates computed at once (every row when T is smaller).
    public let mlpChunkRows: Int
    /// Where the layers' checkpoints wait for the backward when they wait in host memory (nil: on the device).
    let offload: HostOffload?

    /// `mlpChunkBytes`: the size of one `[rows, F]` chunk of the MLP's intermediates (gate, up and their
    /// gradients), counted at 4 bytes an element (they are bf16: half that): the checkpointed strategies never hold
    /// them for all T rows at once (at 32k tokens of llama-1b, 512 MiB each), only one chunk. The default, 256 MiB,
    /// keeps each chunk's GEMMs large.
    /// `offload`: park each layer's checkpoint (x; with `remat` also O and the attention's inputs Q, K, V, which the
    /// backward then does not recompute) in pinned host memory during the forward and fetch it one layer ahead in
    /// the backward, overlapped with the compute (not with `none`, which keeps all).
    /// `kernelTimes`: time each small kernel's launches as a phase of its own ("kernel:NAME" in `phaseSeconds`),
    /// and the time between phases ("gap:A→B").
    public init(config: ModelConfig, attention: any DeviceAttention, checkpoint: CheckpointStrategy = .remat,
                device: CUDADevice, mlpChunkBytes: Int = 256 << 20, offload: Bool = false,
                kernelTimes: Bool = false) throws {
        guard !(offload && checkpoint == .none) else {
            throw DistFlashError(.invalidProblem, "offload with --checkpoint none: that strategy keeps every "
                + "activation on the device; offload moves the checkpoint of layer or remat to host memory")
        }
        (self.config, self.attention, self.checkpoint) = (config, attention, checkpoint)
        self.offload = offload ? try HostOffload(device: device) : nil
        mlpChunkRows = max(1, mlpChunkBytes / (4 * config.ffnDim))
        let blocks = CUDABlocks(device: device, timing: false)  // nobody reads per-op times here
        let clock = PhaseClock(device: device, gaps: kernelTimes)
        ops = DeviceOps(matmul: try DeviceMatmul(device: device),
                        kernels: TrainingKernels(device: device, clock: kernelTimes ? clock : nil), blocks: blocks,
                        clock: clock)
    }

    /// GPU seconds in attention (its communication included) and in GEMMs since the last call, plus what
    /// `timed` added and, with `kernelTimes`, each small kernel's (waits for the device).
    public func phaseSeconds() throws -> [String: Double] { try ops.clock.collect() }

    /// Runs `work` (GPU work on this model's device) as phase `phase` of `phaseSeconds()`.
    public func timed<T>(_ phase: String, _ work: () throws -> T) throws -> T { try ops.clock.time(phase, work) }

    /// What the backward needs of one forward.
    public struct Cache {
        public let loss: Double
        public let correctPredictions: Int
        let shard: TokenBatch
        let positions: [Int]
        let lossNormalizer: Int
        let rope: TrainingKernels.RotaryTables
        var layers: [DeviceSavedLayer]
        /// The output head's forward (x and x̂ of every row: 384 MiB at llama-1b's 32k tokens), released as soon
        /// as the head's backward has run, like each layer's after its own.
        var head: DeviceOutputHead.Saved?
    }

    /// The loss of a shard (tokens and labels `[B, n]`, label −1: no loss) at its tokens' global `positions`,
    /// normalised by N (the labelled tokens over all ranks), and what the backward needs — or, with
    /// `backward: false` (an evaluation), nothing: each layer's activations go as soon as the next layer has run.
    public func forward(_ shard: TokenBatch, positions: [Int], lossNormalizer: Int, weights: DeviceWeights,
                        backward: Bool = true) throws -> Cache {
        guard positions.count == shard.sequence else {
            throw DistFlashError(.shapeMismatch, "\(positions.count) positions for a shard of n = \(shard.sequence) "
                + "tokens: give one global position per token")
        }
        let rope = try rotary.tables(positions, config, ops.blocks.device)
        var x = try ops.kernels.embeddingForward(tokens: shard.tokens, table: weights.master[config.embeddingSlot])
        var saved: [DeviceSavedLayer] = []
        do {
            for index in 0..<config.layers {
                let layer = decoderLayer(index, weights, [], rope, positions, shard.batch)
                let keepsAll = backward && checkpoint == .none
                let activations = try layer.forward(x, keepProjections: keepsAll)
                x = try layer.output(activations.mlp, overwritingHidden: !keepsAll)
                guard backward else { continue }
                // The last layer's checkpoint is the backward's first need: parking it would only add a round trip.
                saved.append(try DeviceSavedLayer(activations, strategy: checkpoint,
                                                  parkingIn: index < config.layers - 1 ? offload : nil))
            }
            try offload?.releaseParked()
        } catch {
            try? offload?.releaseParked()  // the last parked group's device memory goes back with the error
            throw error
        }
        let (loss, correct, head) = try outputHead(weights, []).forward(x, labels: shard.labels,
                                                                        normalizer: lossNormalizer)
        return Cache(loss: loss, correctPredictions: correct, shard: shard, positions: positions,
                     lossNormalizer: lossNormalizer, rope: rope, layers: saved, head: backward ? head : nil)
    }

    /// Writes the gradient of the cached forward's loss with respect to every parameter into `gradients` (fp32, in
    /// `Parameters` order; what they held before is overwritten, so they need no fill), recomputing what the
    /// strategy dropped, last layer first.
    public func backward(_ cache: consuming Cache, weights: DeviceWeights, into gradients: [DeviceTensor]) throws {
        guard gradients.count == weights.master.count,
              zip(gradients, weights.master).allSatisfy({ $0.shape == $1.shape && $0.precision == .float32 }) else {
            throw DistFlashError(.shapeMismatch, "gradients must be fp32 tensors of the parameters' shapes, in order")
        }
        guard let head = cache.head.take(), cache.layers.count == config.layers else {
            throw DistFlashError(.runtime, "the forward's saved activations are missing: a cache goes through one "
                + "backward, and an evaluation's (backward: false) keeps none")
        }
        var outputGrad = try outputHead(weights, gradients).backward(consume head, normalizer: cache.lossNormalizer)
        for index in (0..<config.layers).reversed() {
            let layer = decoderLayer(index, weights, gradients, cache.rope, cache.positions, cache.shard.batch)
            let saved = cache.layers.removeLast()
            try cache.layers.last?.fetch()  // the next layer's parked checkpoint comes back during this one
            let activations = try layer.restore(saved)
            outputGrad = try layer.backward(activations, outputGrad: outputGrad)
        }
        // The table's gradient is a scatter-add over the tokens: the one gradient that starts from zero.
        try ops.kernels.fill(gradients[config.embeddingSlot], with: 0)
        try ops.kernels.embeddingBackward(tokens: cache.shard.tokens, outputGrad: outputGrad.value,
                                          tableGrad: gradients[config.embeddingSlot])
    }

    private func decoderLayer(_ index: Int, _ weights: DeviceWeights, _ gradients: [DeviceTensor],
                              _ rope: TrainingKernels.RotaryTables, _ positions: [Int], _ batch: Int) -> DeviceDecoderLayer {
        DeviceDecoderLayer(config: config, index: index, weights: weights, gradients: gradients, rope: rope,
                           positions: positions, batch: batch, attention: attention, ops: ops,
                           mlpChunkRows: mlpChunkRows)
    }

    private func outputHead(_ weights: DeviceWeights, _ gradients: [DeviceTensor]) -> DeviceOutputHead {
        DeviceOutputHead(config: config, weights: weights, gradients: gradients, ops: ops)
    }
}

/// The rotary tables on the device for one list of positions, made on first use and kept while the positions stay.
final class RotaryCache: @unchecked Sendable {
    // Invariant: `last` is touched only while holding `lock`.
    private let lock = NSLock()
    private var last: (positions: [Int], tables: TrainingKernels.RotaryTables)?

    func tables(_ positions: [Int], _ config: ModelConfig, _ device: CUDADevice) throws -> TrainingKernels.RotaryTables {
        try lock.withLock {
            if let last, last.positions == positions { return last.tables }
            let host = try RotaryEmbedding(positions: positions, headDim: config.headDim, theta: config.ropeTheta)
            let tables = try TrainingKernels.RotaryTables(device: device, cosines: host.cosines, sines: host.sines,
                                                          tokens: positions.count, headDim: config.headDim)
            last = (positions, tables)
            return tables
        }
    }
}
