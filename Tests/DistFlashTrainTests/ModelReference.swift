import DistFlashAttn
import DistFlashAttnReference
import DistFlashTrain

/// The whole model written plainly on reference scalars, following the Hugging Face LLaMA forward:
/// embedding, per layer `h = x + o_proj(attn(rope(q_proj(n₁)), rope(k_proj(n₁)), v_proj(n₁)))` with
/// n₁ = RMSNorm(x), `y = h + down_proj(silu(gate_proj(n₂))·up_proj(n₂))` with n₂ = RMSNorm(h), final RMSNorm,
/// lm_head, cross-entropy over the labelled tokens divided by N.
enum ModelReference<R: ReferenceScalar> {
    /// `tensors` in `config.parameterSpecs` order; tokens and labels `[B, n]`.
    static func loss(_ config: ModelConfig, tensors: [[R]], tokens: [Int32], labels: [Int32], positions: [Int],
                     normalizer: Int) -> R {
        let (E, D, F, V) = (config.dim, config.headDim, config.ffnDim, config.vocab)
        let (H, Hkv) = (config.heads, config.kvHeads)
        var x: [R] = tokens.flatMap { tensors[0][Int($0) * E..<(Int($0) + 1) * E] }
        for layer in 0..<config.layers {
            let w = Array(tensors[1 + 9 * layer..<1 + 9 * (layer + 1)])  // q k v o gate up down norm₁ norm₂
            let n1 = ReferenceMath.rmsNorm(x, w[7], epsilon: Double(config.normEps))
            let q = ReferenceMath.rope(ReferenceMath.linear(n1, w[0], inputs: E, outputs: H * D),
                                       positions: positions, heads: H, headDim: D, theta: config.ropeTheta)
            let k = ReferenceMath.rope(ReferenceMath.linear(n1, w[1], inputs: E, outputs: Hkv * D),
                                       positions: positions, heads: Hkv, headDim: D, theta: config.ropeTheta)
            let v = ReferenceMath.linear(n1, w[2], inputs: E, outputs: Hkv * D)
            let o = ReferenceMath.attention(query: q, key: k, value: v, positions: positions, heads: H,
                                            kvHeads: Hkv, headDim: D)
            let h = zip(x, ReferenceMath.linear(o, w[3], inputs: H * D, outputs: E)).map { $0 + $1 }
            let n2 = ReferenceMath.rmsNorm(h, w[8], epsilon: Double(config.normEps))
            let a = ReferenceMath.swiglu(gate: ReferenceMath.linear(n2, w[4], inputs: E, outputs: F),
                                         up: ReferenceMath.linear(n2, w[5], inputs: E, outputs: F))
            x = zip(h, ReferenceMath.linear(a, w[6], inputs: F, outputs: E)).map { $0 + $1 }
        }
        let normed = ReferenceMath.rmsNorm(x, tensors[tensors.count - 2], epsilon: Double(config.normEps))
        let logits = ReferenceMath.linear(normed, tensors[tensors.count - 1], inputs: E, outputs: V)
        return ReferenceMath.crossEntropy(logits, labels: labels, vocab: V, normalizer: normalizer)
    }
}

/// Loss and gradients of the reference model differentiated on a tape in T (float64: the reference; float32:
/// the naive same-precision baseline).
func tracedModel<T: NaiveScalar>(_ config: ModelConfig, _ parameters: Parameters, _ shard: TokenBatch,
                                 positions: [Int], normalizer: Int, as: T.Type) -> (loss: Double, grads: [[Double]]) {
    let tape = Tape<T>()
    let inputs = parameters.tensors.map { $0.scalars.map { tape.variable(T($0)) } }
    let loss = ModelReference.loss(config, tensors: inputs, tokens: shard.tokens, labels: shard.labels,
                                   positions: positions, normalizer: normalizer)
    let adjoint = tape.gradient(of: loss)
    return (loss.doubleValue, inputs.map { $0.map { Double(adjoint[Int($0.index)]) } })
}
