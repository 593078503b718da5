import DistFlashAttn

/// The attention half's inputs of one decoder layer: r₁, x̂₁ = RMSNorm₁(x) and the projections of x̂₁, with RoPE
/// applied to Q and K.
struct AttentionInputs: Sendable {
    /// r₁ `[B, n]`
    var inverseRMS: Tensor
    /// x̂₁ `[B, n, E]`
    var normed: Tensor
    /// Q `[B, n, H, D]`, rotated
    var query: Tensor
    /// K `[B, n, H_kv, D]`, rotated
    var key: Tensor
    /// V `[B, n, H_kv, D]`
    var value: Tensor

    var count: Int { [inverseRMS, normed, query, key, value].reduce(0) { $0 + $1.count } }
}

/// The MLP half's activations: h = x + O·W_oᵀ, r₂, x̂₂ = RMSNorm₂(h), gate, up and a = silu(gate)·up.
struct MLPActivations: Sendable {
    /// h `[B, n, E]`
    var hidden: Tensor
    /// r₂ `[B, n]`
    var inverseRMS: Tensor
    /// x̂₂ `[B, n, E]`
    var normed: Tensor
    /// `[B, n, F]` each
    var gate: Tensor
    var up: Tensor
    var activated: Tensor

    var count: Int { [hidden, inverseRMS, normed, gate, up, activated].reduce(0) { $0 + $1.count } }
}

/// Everything the backward of one decoder layer reads.
struct LayerActivations: Sendable {
    /// x `[B, n, E]`
    var input: Tensor
    var attentionInputs: AttentionInputs
    /// O `[B, n, H, D]`, LSE `[B, H, n]`
    var attention: AttentionPartial
    var mlp: MLPActivations

    var bytes: Int {
        4 * (input.count + attentionInputs.count + attention.output.count + attention.logSumExp.count + mlp.count)
    }
}

/// What a checkpoint strategy keeps of one layer between its forward and its backward.
enum SavedLayer: Sendable {
    /// `none`: every activation.
    case all(LayerActivations)
    /// `layer`: the input x.
    case input(Tensor)
    /// `remat`: the input x and the attention result (O, LSE).
    case inputAndAttention(Tensor, AttentionPartial)

    init(_ activations: LayerActivations, strategy: CheckpointStrategy) {
        switch strategy {
        case .none: self = .all(activations)
        case .layer: self = .input(activations.input)
        case .remat: self = .inputAndAttention(activations.input, activations.attention)
        }
    }

    var bytes: Int {
        switch self {
        case .all(let activations): activations.bytes
        case .input(let x): 4 * x.count
        case .inputAndAttention(let x, let attention):
            4 * (x.count + attention.output.count + attention.logSumExp.count)
        }
    }
}
