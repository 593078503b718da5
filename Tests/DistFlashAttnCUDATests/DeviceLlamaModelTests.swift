import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import DistFlashTrainCUDA
import Testing

/// The GPU model against the CPU model (itself checked against a float64 reference): same parameters, same
/// shard. The GPU feeds its GEMMs and the attention bf16 operands, so loss and gradients agree to bf16 accuracy,
/// judged per tensor by the normwise relative error.
@Suite("GPU training model")
struct DeviceLlamaModelTests {
    static let config = try! ModelConfig(vocab: 61, dim: 128, layers: 2, heads: 2, kvHeads: 1, headDim: 64, ffnDim: 176)

    static func shard(seed: UInt64) -> TokenBatch {
        var random = SeededRandom(seed: seed)
        let n = 67
        let tokens = (0..<n).map { _ in Int32.random(in: 0..<Int32(config.vocab), using: &random) }
        let labels = (0..<n).map { $0 % 9 == 4 || $0 == n - 1 ? -1 : tokens[$0 + 1] }
        return TokenBatch(batch: 1, sequence: n, tokens: tokens, labels: labels)
    }

    /// ‖got − want‖ / ‖want‖ over one tensor's elements.
    static func relativeError(_ got: Tensor, _ want: Tensor) -> Double {
        let difference = zip(got.scalars, want.scalars).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let norm = want.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (difference / max(norm, 1e-30)).squareRoot()
    }

    /// One GPU forward and backward; `mlpChunkBytes` and `offload` as the model's (nil: its default chunk, one
    /// chunk at these sizes).
    func gpuRun(_ strategy: CheckpointStrategy, _ shard: TokenBatch, _ parameters: Parameters, mlpChunkBytes: Int? = nil,
                offload: Bool = false) throws -> (loss: Double, gradients: [Tensor], forwardCalls: Int, phases: [String]) {
        let blocks = CUDABlocks(device: gpu!)
        let attention = SingleGPUAttention(blocks: blocks, mask: .causal)
        let model = try DeviceLlamaModel(config: Self.config, attention: attention, checkpoint: strategy, device: gpu!,
                                         mlpChunkBytes: mlpChunkBytes ?? 256 << 20, offload: offload,
                                         kernelTimes: offload)
        let weights = try DeviceWeights(parameters, fp32Only: [Self.config.embeddingSlot], on: gpu!)
        let cache = try model.forward(shard, positions: Array(0..<shard.sequence), lossNormalizer: shard.labeledCount,
                                      weights: weights)
        let loss = cache.loss
        let gradients = try weights.zeroGradients(blocks)
        // The backward writes every gradient, adding to none: from NaN, an element missed or added to stays NaN.
        for gradient in gradients { try TrainingKernels(device: gpu!).fill(gradient, with: .nan) }
        try model.backward(consume cache, weights: weights, into: gradients)
        return (loss, try gradients.map { try $0.download() }, attention.forwardCalls, try model.phaseSeconds().keys.sorted())
    }

    @Test("loss and gradients equal the CPU model's to bf16 accuracy: each checkpoint strategy, MLP chunked or not, offloaded",
          .enabled(if: gpu != nil))
    func matchesCPU() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        let (shard, parameters) = (Self.shard(seed: seed), Self.config.initialParameters(seed: seed))
        let cpu = LlamaModel(config: Self.config, attention: LocalAttention(mask: .causal), checkpoint: .none)
        let (loss, cache) = try cpu.forward(shard, positions: Array(0..<shard.sequence),
                                            lossNormalizer: shard.labeledCount, parameters: parameters)
        let expected = try cpu.backward(cache)
        var runs: [(strategy: CheckpointStrategy, offload: Bool, loss: Double, gradients: [Tensor])] = []
        // 16 rows a chunk: the 67-row shard in five chunks, the last one of 3 rows. Offloaded: the first layer's
        // checkpoint goes to host memory and comes back during the second layer's backward (HostOffloadTests hold
        // the copies back to test the ordering); kernels are timed too.
        let chunked = 16 * 4 * Self.config.ffnDim
        let variants = [CheckpointStrategy.none, .layer, .remat].flatMap { [($0, nil, false), ($0, chunked, false)] }
            + [(.layer, nil, true), (.remat, chunked, true)]
        for (strategy, chunkBytes, offload) in variants {
            let run = try gpuRun(strategy, shard, parameters, mlpChunkBytes: chunkBytes, offload: offload)
            let label = "\(strategy)\(chunkBytes == nil ? "" : ", MLP in chunks")\(offload ? ", offloaded" : "")"
            #expect(run.forwardCalls == Self.config.layers * (strategy == .layer ? 2 : 1), "\(label)")
            // The offloaded runs also time each small kernel as a phase of its own.
            #expect(run.phases.contains("kernel:swiglu_forward") == offload, "\(label): phases \(run.phases)")
            #expect(abs(run.loss - loss) <= 1e-2 * abs(loss), "\(label): loss \(run.loss) vs CPU \(loss)")
            for (name, (got, want)) in zip(parameters.names, zip(run.gradients, expected.tensors)) {
                let error = Self.relativeError(got, want)
                #expect(error <= 5e-2, "\(label) \(name): relative error \(error)")
            }
            runs.append((strategy, offload, run.loss, run.gradients))
        }
        // The strategies compute the same thing (every one's δ = rowsum(dO ∘ O) reads the bf16 O the layer keeps);
        // only the order of fp32 reductions (dQ, dK, dV, embedding) and of the chunks' weight-gradient sums may
        // differ.
        for run in runs.dropFirst() {
            #expect(abs(run.loss - runs[0].loss) <= 1e-6 * abs(runs[0].loss))
            for (name, (got, want)) in zip(parameters.names, zip(run.gradients, runs[0].gradients)) {
                #expect(Self.relativeError(got, want) <= 1e-4, "\(run.strategy) \(name)")
            }
        }
        // A checkpoint that went to host memory and back is the same bytes: only the atomics' order may differ.
        for run in runs where run.offload {
            let kept = runs.first { $0.strategy == run.strategy && !$0.offload }!
            for (name, (got, want)) in zip(parameters.names, zip(run.gradients, kept.gradients)) {
                #expect(Self.relativeError(got, want) <= 1e-4, "\(run.strategy), offloaded: \(name)")
            }
        }
    }
}
