import DistFlashAttn
import DistFlashAttnCPU

/// One pre-norm LLaMA block on a shard x `[B, n, E]`:
/// ```
/// x̂₁ = RMSNorm₁(x)      Q = RoPE(x̂₁·W_qᵀ)   K = RoPE(x̂₁·W_kᵀ)   V = x̂₁·W_vᵀ
/// O  = Attention(Q, K, V)                     (through the attention operator: all ranks' keys)
/// h  = x + O·W_oᵀ
/// x̂₂ = RMSNorm₂(h)      a = silu(x̂₂·W_gᵀ) ∘ (x̂₂·W_uᵀ)
/// y  = h + a·W_dᵀ
/// ```
/// The forward is split where the checkpoint strategies cut it: `attentionInputs` (before the attention),
/// `attention.forward`, `mlpActivations` (from O on), `output`.
struct DecoderLayer {
    let config: ModelConfig
    let index: Int
    let parameters: Parameters
    let rope: RotaryEmbedding
    let attention: any AttentionOperator
    let cpu: CPUBackend

    func slot(_ tensor: LayerTensor) -> Int { config.slot(index, tensor) }
    func weight(_ tensor: LayerTensor) -> Tensor { parameters.tensors[slot(tensor)] }

    /// x̂₁, Q, K, V from x `[B, n, E]`.
    func attentionInputs(_ x: Tensor) throws -> AttentionInputs {
        let (batch, n) = (x.shape[0], x.shape[1])
        let (normed, inverseRMS) = try RMSNorm.forward(x, weight: weight(.inputNorm), epsilon: config.normEps)
        var query = try Linear.forward(normed, weight: weight(.query),
                                       shape: [batch, n, config.heads, config.headDim], on: cpu)
        var key = try Linear.forward(normed, weight: weight(.key),
                                     shape: [batch, n, config.kvHeads, config.headDim], on: cpu)
        let value = try Linear.forward(normed, weight: weight(.value),
                                       shape: [batch, n, config.kvHeads, config.headDim], on: cpu)
        try rope.apply(to: &query)
        try rope.apply(to: &key)
        return AttentionInputs(inverseRMS: inverseRMS, normed: normed, query: query, key: key, value: value)
    }

    /// h, x̂₂, gate, up, a from x `[B, n, E]` and the attention output O `[B, n, H, D]`.
    func mlpActivations(input x: Tensor, attentionOutput: Tensor) throws -> MLPActivations {
        let (batch, n) = (x.shape[0], x.shape[1])
        var hidden = x
        try Linear.forward(attentionOutput, weight: weight(.output), addingTo: &hidden, on: cpu)
        let (normed, inverseRMS) = try RMSNorm.forward(hidden, weight: weight(.postAttentionNorm),
                                                       epsilon: config.normEps)
        let gate = try Linear.forward(normed, weight: weight(.gate), shape: [batch, n, config.ffnDim], on: cpu)
        let up = try Linear.forward(normed, weight: weight(.up), shape: [batch, n, config.ffnDim], on: cpu)
        let activated = try SwiGLU.forward(gate: gate, up: up)
        return MLPActivations(hidden: hidden, inverseRMS: inverseRMS, normed: normed, gate: gate, up: up,
                              activated: activated)
    }

    /// y = h + a·W_dᵀ `[B, n, E]`.
    func output(_ mlp: MLPActivations) throws -> Tensor {
        var y = mlp.hidden
        try Linear.forward(mlp.activated, weight: weight(.down), addingTo: &y, on: cpu)
        return y
    }

    /// Every activation of the layer (one attention forward).
    func forward(_ x: Tensor) throws -> LayerActivations {
        let inputs = try attentionInputs(x)
        let result = try attention.forward(query: inputs.query, key: inputs.key, value: inputs.value,
                                           positions: rope.positions)
        let mlp = try mlpActivations(input: x, attentionOutput: result.output)
        return LayerActivations(input: x, attentionInputs: inputs, attention: result, mlp: mlp)
    }

    /// The activations a saved layer lacks, recomputed as its strategy prescribes (`remat` never runs the
    /// attention forward: it starts again from the saved O).
    func restore(_ saved: SavedLayer) throws -> LayerActivations {
        switch saved {
        case .all(let activations):
            return activations
        case .input(let x):
            return try forward(x)
        case .inputAndAttention(let x, let result):
            return LayerActivations(input: x, attentionInputs: try attentionInputs(x), attention: result,
                                    mlp: try mlpActivations(input: x, attentionOutput: result.output))
        }
    }

    /// dx `[B, n, E]` from dy `[B, n, E]`; adds every weight gradient of the layer into `grads`.
    /// ```
    /// da = dy·W_d            dW_d += dyᵀ·a
    /// dg, du = SwiGLU'(da)   dW_g += dgᵀ·x̂₂   dW_u += duᵀ·x̂₂   dx̂₂ = dg·W_g + du·W_u
    /// dh = dy + RMSNorm₂'(dx̂₂)
    /// dO = dh·W_o            dW_o += dhᵀ·O
    /// dQ, dK, dV = Attention'(dO);  dQ, dK rotated back
    /// dx̂₁ = dQ·W_q + dK·W_k + dV·W_v   (and dW_q += dQᵀ·x̂₁, …)
    /// dx = dh + RMSNorm₁'(dx̂₁)
    /// ```
    func backward(_ a: LayerActivations, outputGrad: Tensor, into grads: inout Parameters) throws -> Tensor {
        let (batch, n) = (outputGrad.shape[0], outputGrad.shape[1])
        let tokenShape = [batch, n, config.dim]

        var activatedGrad = Tensor(shape: [batch, n, config.ffnDim])
        try Linear.inputGradient(outputGrad, weight: weight(.down), into: &activatedGrad, on: cpu)
        try Linear.accumulateWeightGradient(outputGrad, input: a.mlp.activated, into: &grads.tensors[slot(.down)],
                                            on: cpu)
        let (gateGrad, upGrad) = try SwiGLU.backward(gate: a.mlp.gate, up: a.mlp.up, outputGrad: activatedGrad)
        var normedGrad = Tensor(shape: tokenShape)
        try Linear.inputGradient(gateGrad, weight: weight(.gate), into: &normedGrad, on: cpu)
        try Linear.inputGradient(upGrad, weight: weight(.up), into: &normedGrad, accumulate: true, on: cpu)
        try Linear.accumulateWeightGradient(gateGrad, input: a.mlp.normed, into: &grads.tensors[slot(.gate)], on: cpu)
        try Linear.accumulateWeightGradient(upGrad, input: a.mlp.normed, into: &grads.tensors[slot(.up)], on: cpu)
        var hiddenGrad = outputGrad
        try RMSNorm.backward(a.mlp.hidden, inverseRMS: a.mlp.inverseRMS, weight: weight(.postAttentionNorm),
                             outputGrad: normedGrad, inputGrad: &hiddenGrad,
                             weightGrad: &grads.tensors[slot(.postAttentionNorm)])

        var attentionOutputGrad = Tensor(shape: [batch, n, config.heads, config.headDim])
        try Linear.inputGradient(hiddenGrad, weight: weight(.output), into: &attentionOutputGrad, on: cpu)
        try Linear.accumulateWeightGradient(hiddenGrad, input: a.attention.output, into: &grads.tensors[slot(.output)],
                                            on: cpu)
        let inputs = a.attentionInputs
        var qkv = try attention.backward(query: inputs.query, key: inputs.key, value: inputs.value,
                                         positions: rope.positions, result: a.attention,
                                         outputGrad: attentionOutputGrad)
        try rope.applyBackward(to: &qkv.query)
        try rope.applyBackward(to: &qkv.key)

        normedGrad = Tensor(shape: tokenShape)
        for (grad, tensor) in [(qkv.query, LayerTensor.query), (qkv.key, .key), (qkv.value, .value)] {
            try Linear.inputGradient(grad, weight: weight(tensor), into: &normedGrad, accumulate: tensor != .query,
                                     on: cpu)
            try Linear.accumulateWeightGradient(grad, input: inputs.normed, into: &grads.tensors[slot(tensor)], on: cpu)
        }
        var inputGrad = hiddenGrad
        try RMSNorm.backward(a.input, inverseRMS: inputs.inverseRMS, weight: weight(.inputNorm),
                             outputGrad: normedGrad, inputGrad: &inputGrad, weightGrad: &grads.tensors[slot(.inputNorm)])
        return inputGrad
    }
}
