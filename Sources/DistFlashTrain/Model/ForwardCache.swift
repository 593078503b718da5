import DistFlashAttn

/// What a forward pass leaves for its backward pass: the activations its checkpoint strategy kept, the inputs
/// of the output head, and the parameters it ran with (so the backward differentiates the same function).
/// `LlamaModel.backward` consumes it.
public struct ForwardCache: Sendable {
    /// This shard's share of the loss (the global mean once summed over ranks).
    public let loss: Double
    /// The shard's labelled tokens whose largest logit is their label (argmax, first index on ties): summed over
    /// ranks and divided by the labelled count, the batch's next-token accuracy.
    public let correctPredictions: Int
    public let strategy: CheckpointStrategy
    /// The activation counter at the end of the forward; the backward continues it.
    public internal(set) var memory: ActivationMemory

    let parameters: Parameters
    let shard: TokenBatch
    let lossNormalizer: Int
    let rope: RotaryEmbedding
    /// One per decoder layer, first layer first.
    var layers: [SavedLayer]
    let head: HeadActivations
}

/// The output head's saved inputs: the last layer's output and its final normalisation, and each token's
/// log-sum-exp over the vocabulary (the logits themselves are recomputed in chunks by the backward).
struct HeadActivations: Sendable {
    /// `[B, n, E]`
    var input: Tensor
    /// `[B, n]`
    var inverseRMS: Tensor
    /// `[B, n, E]`
    var normed: Tensor
    /// `[B·n]`
    var logSumExp: [Float]

    var bytes: Int { 4 * (input.count + inverseRMS.count + normed.count + logSumExp.count) }
}
