import DistFlashAttn
import DistFlashAttnCPU

/// A LLaMA-style causal language model with an explicit backward pass, run on one rank's shard of the sequence.
///
/// ```
/// x₀ = Embedding(tokens)                      [B, n, E]
/// x_{l+1} = DecoderLayer_l(x_l)               l = 0 ..< layers  (attention through `attention`)
/// loss = CrossEntropy(RMSNorm(x_L)·W_headᵀ, labels) / N
/// ```
/// Everything but the attention is local to the shard's tokens, so with the shards of all P ranks the losses
/// add up to the global mean and the parameter gradients add up (all-reduce) to the global gradient.
/// Dense math runs on `cpu`; the attention on whatever the operator uses.
public struct LlamaModel: Sendable {
    public let config: ModelConfig
    public var attention: any AttentionOperator
    public var checkpoint: CheckpointStrategy
    /// Threads and micro-kernels of the projections, MLP and output head.
    public var cpu: CPUBackend

    public init(config: ModelConfig, attention: any AttentionOperator = LocalAttention(),
                checkpoint: CheckpointStrategy = .remat, cpu: CPUBackend = CPUBackend()) {
        (self.config, self.attention, self.checkpoint, self.cpu) = (config, attention, checkpoint, cpu)
    }

    /// The loss of a shard and what its backward needs.
    /// - shard: tokens and labels `[B, n]` (label −1: no loss).
    /// - positions: `[n]`, the global position of each of the shard's tokens (RoPE and the attention mask).
    /// - lossNormalizer: N, the number of labelled tokens over all ranks.
    public func forward(_ shard: TokenBatch, positions: [Int], lossNormalizer: Int, parameters: Parameters) throws
        -> (loss: Double, cache: ForwardCache) {
        try config.validate(parameters)
        guard positions.count == shard.sequence else {
            throw DistFlashError(.shapeMismatch, "\(positions.count) positions for a shard of n = \(shard.sequence) "
                + "tokens: give one global position per token")
        }
        let rope = try RotaryEmbedding(positions: positions, headDim: config.headDim, theta: config.ropeTheta)
        var memory = ActivationMemory()
        var x = try Embedding.forward(tokens: shard.tokens, batch: shard.batch,
                                      table: parameters.tensors[config.embeddingSlot])
        var saved: [SavedLayer] = []
        for index in 0..<config.layers {
            let layer = decoderLayer(index, parameters, rope)
            let activations = try layer.forward(x)
            memory.hold(activations.bytes)
            x = try layer.output(activations.mlp)
            saved.append(SavedLayer(activations, strategy: checkpoint))
            memory.release(activations.bytes - saved[index].bytes)
        }
        let (loss, correct, head) = try OutputHead(config: config, parameters: parameters, cpu: cpu)
            .forward(x, labels: shard.labels, normalizer: lossNormalizer)
        memory.hold(head.bytes)
        memory.endForward()
        let cache = ForwardCache(loss: loss, correctPredictions: correct, strategy: checkpoint, memory: memory,
                                 parameters: parameters, shard: shard, lossNormalizer: lossNormalizer, rope: rope,
                                 layers: saved, head: head)
        return (loss, cache)
    }

    /// Adds the gradient of the cached forward's loss with respect to every parameter into `grads` (same names
    /// and shapes as the parameters), recomputing what the cache's strategy dropped, last layer first.
    /// Returns the activation counter continued through the backward.
    @discardableResult
    public func backward(_ cache: consuming ForwardCache, into grads: inout Parameters) throws -> ActivationMemory {
        try config.validate(grads, "gradients")
        let parameters = cache.parameters
        var memory = cache.memory
        var outputGrad = try OutputHead(config: config, parameters: parameters, cpu: cpu)
            .backward(cache.head, labels: cache.shard.labels, normalizer: cache.lossNormalizer, into: &grads)
        memory.release(cache.head.bytes)
        for index in (0..<config.layers).reversed() {
            let layer = decoderLayer(index, parameters, cache.rope)
            let saved = cache.layers.removeLast()
            let activations = try layer.restore(saved)
            memory.hold(activations.bytes - saved.bytes)
            outputGrad = try layer.backward(activations, outputGrad: outputGrad, into: &grads)
            memory.release(activations.bytes)
        }
        Embedding.backward(tokens: cache.shard.tokens, outputGrad: outputGrad,
                           tableGrad: &grads.tensors[config.embeddingSlot])
        return memory
    }

    /// The gradients of the cached forward's loss, as fresh tensors.
    public func backward(_ cache: consuming ForwardCache) throws -> Parameters {
        var grads = cache.parameters.zeros()
        try backward(cache, into: &grads)
        return grads
    }

    private func decoderLayer(_ index: Int, _ parameters: Parameters, _ rope: RotaryEmbedding) -> DecoderLayer {
        DecoderLayer(config: config, index: index, parameters: parameters, rope: rope, attention: attention, cpu: cpu)
    }
}
