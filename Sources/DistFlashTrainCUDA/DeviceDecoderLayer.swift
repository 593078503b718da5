import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain

/// Every activation of one decoder layer on the GPU, for its backward. T = B·n token rows.
struct DeviceLayerActivations {
    let input: DeviceTensor           // x, fp32 [T, E]
    let inverseRMS: DeviceTensor      // r₁, fp32 [T]
    let normed: DeviceTensor          // x̂₁, bf16 [T, E]
    let query: DeviceTensor           // Q after RoPE, bf16 [B, n, H, D]
    let key: DeviceTensor             // K after RoPE, bf16 [B, n, H_kv, D]
    let value: DeviceTensor           // V, bf16 [B, n, H_kv, D]
    let output: DeviceTensor          // O, fp32 [B, n, H, D]
    let logSumExp: DeviceTensor       // LSE, fp32 [B, H, n]
    let mlp: DeviceMLPActivations
}

/// What the layer computes from O on (the part `remat` recomputes).
struct DeviceMLPActivations {
    let outputBF16: DeviceTensor      // O in bf16 as the W_o GEMM reads it, [T, H·D]
    let hidden: DeviceTensor          // h = x + O·W_oᵀ, fp32 [T, E]
    let inverseRMS: DeviceTensor      // r₂, fp32 [T]
    let normed: DeviceTensor          // x̂₂, bf16 [T, E]
    let gate: DeviceTensor            // fp32 [T, F]
    let up: DeviceTensor              // fp32 [T, F]
    let activated: DeviceTensor       // a = silu(gate)·up, bf16 [T, F]
}

/// What a layer keeps between its forward and its backward, by checkpoint strategy.
enum DeviceSavedLayer {
    case all(DeviceLayerActivations)
    case input(DeviceTensor)
    case inputAndAttention(DeviceTensor, output: DeviceTensor, logSumExp: DeviceTensor)

    init(_ activations: DeviceLayerActivations, strategy: CheckpointStrategy) {
        switch strategy {
        case .none: self = .all(activations)
        case .layer: self = .input(activations.input)
        case .remat: self = .inputAndAttention(activations.input, output: activations.output,
                                               logSumExp: activations.logSumExp)
        }
    }
}

/// One pre-norm LLaMA block on the GPU — the same computation as the CPU `DecoderLayer`, with GEMM operands in
/// bf16 (fp32 accumulation) and the residual stream, statistics and gradients in fp32:
/// ```
/// x̂₁ = RMSNorm₁(x)   Q = RoPE(x̂₁·W_qᵀ)   K = RoPE(x̂₁·W_kᵀ)   V = x̂₁·W_vᵀ   O = Attention(Q, K, V)
/// h = x + O·W_oᵀ     x̂₂ = RMSNorm₂(h)     a = silu(x̂₂·W_gᵀ) ∘ (x̂₂·W_uᵀ)      y = h + a·W_dᵀ
/// ```
struct DeviceDecoderLayer {
    let config: ModelConfig
    let index: Int
    let weights: DeviceWeights
    let gradients: [DeviceTensor]
    let rope: TrainingKernels.RotaryTables
    let positions: [Int]
    let batch: Int
    let attention: any DeviceAttention
    let ops: DeviceOps

    private func slot(_ tensor: LayerTensor) -> Int { config.slot(index, tensor) }
    private func master(_ tensor: LayerTensor) -> DeviceTensor { weights.master[slot(tensor)] }
    private func matrix(_ tensor: LayerTensor) -> DeviceTensor { weights.bf16[slot(tensor)]! }
    private func gradient(_ tensor: LayerTensor) -> DeviceTensor { gradients[slot(tensor)] }
    private var n: Int { positions.count }
    private var rows: Int { batch * n }

    /// x̂₁, Q, K, V from x.
    func attentionInputs(_ x: DeviceTensor) throws -> (inverseRMS: DeviceTensor, normed: DeviceTensor,
                                                       query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) {
        let (normed, inverseRMS) = try ops.kernels.rmsNormForward(x, weight: master(.inputNorm), epsilon: config.normEps)
        let (h, hkv, d) = (config.heads, config.kvHeads, config.headDim)
        let q = try ops.linear(normed, matrix(.query)).reshaped([batch, n, h, d])
        let k = try ops.linear(normed, matrix(.key)).reshaped([batch, n, hkv, d])
        let v = try ops.linear(normed, matrix(.value))
        return (inverseRMS, normed, try ops.kernels.rotary(q, rope), try ops.kernels.rotary(k, rope),
                try ops.kernels.bf16(v).reshaped([batch, n, hkv, d]))
    }

    /// h, x̂₂, gate, up, a from x and O.
    func mlpActivations(input x: DeviceTensor, attentionOutput: DeviceTensor) throws -> DeviceMLPActivations {
        let outputBF16 = try ops.kernels.bf16(attentionOutput).reshaped([rows, config.heads * config.headDim])
        let hidden = try ops.copy(x)
        try ops.multiply(outputBF16, matrix(.output), transposeB: true, into: hidden, beta: 1)
        let (normed, inverseRMS) = try ops.kernels.rmsNormForward(hidden, weight: master(.postAttentionNorm),
                                                                  epsilon: config.normEps)
        let gate = try ops.linear(normed, matrix(.gate)), up = try ops.linear(normed, matrix(.up))
        return DeviceMLPActivations(outputBF16: outputBF16, hidden: hidden, inverseRMS: inverseRMS, normed: normed,
                                    gate: gate, up: up,
                                    activated: try ops.kernels.swiGLUForward(gate: gate, up: up))
    }

    /// y = h + a·W_dᵀ.
    func output(_ mlp: DeviceMLPActivations) throws -> DeviceTensor {
        let y = try ops.copy(mlp.hidden)
        try ops.multiply(mlp.activated, matrix(.down), transposeB: true, into: y, beta: 1)
        return y
    }

    /// Every activation (one attention forward).
    func forward(_ x: DeviceTensor) throws -> DeviceLayerActivations {
        let inputs = try attentionInputs(x)
        let result = try ops.clock.time("attention") {
            try attention.forward(query: inputs.query, key: inputs.key, value: inputs.value, positions: positions)
        }
        return DeviceLayerActivations(input: x, inverseRMS: inputs.inverseRMS, normed: inputs.normed, query: inputs.query,
                                      key: inputs.key, value: inputs.value, output: result.output,
                                      logSumExp: result.logSumExp,
                                      mlp: try mlpActivations(input: x, attentionOutput: result.output))
    }

    /// The activations a saved layer lacks (`remat` restarts from the saved O: no attention forward).
    func restore(_ saved: DeviceSavedLayer) throws -> DeviceLayerActivations {
        switch saved {
        case .all(let activations):
            return activations
        case .input(let x):
            return try forward(x)
        case .inputAndAttention(let x, let output, let logSumExp):
            let inputs = try attentionInputs(x)
            return DeviceLayerActivations(input: x, inverseRMS: inputs.inverseRMS, normed: inputs.normed,
                                          query: inputs.query, key: inputs.key, value: inputs.value, output: output,
                                          logSumExp: logSumExp,
                                          mlp: try mlpActivations(input: x, attentionOutput: output))
        }
    }

    /// dx (fp32 [T, E]) from dy; adds the layer's weight gradients (as the CPU layer's backward).
    func backward(_ a: DeviceLayerActivations, outputGrad dy: DeviceTensor) throws -> DeviceTensor {
        let kernels = ops.kernels
        let dyBF16 = try kernels.bf16(dy)
        let activatedGrad = try ops.inputGradient(dyBF16, matrix(.down))
        try ops.weightGradient(dyBF16, a.mlp.activated, into: gradient(.down))
        let (gateBF16, upBF16) = try kernels.swiGLUBackward(gate: a.mlp.gate, up: a.mlp.up, outputGrad: activatedGrad)
        let normedGrad = try ops.inputGradient(gateBF16, matrix(.gate))
        try ops.multiply(upBF16, matrix(.up), into: normedGrad, beta: 1)
        try ops.weightGradient(gateBF16, a.mlp.normed, into: gradient(.gate))
        try ops.weightGradient(upBF16, a.mlp.normed, into: gradient(.up))
        let hiddenGrad = try ops.copy(dy)
        try kernels.rmsNormBackward(a.mlp.hidden, inverseRMS: a.mlp.inverseRMS, weight: master(.postAttentionNorm),
                                    outputGrad: normedGrad, inputGrad: hiddenGrad,
                                    weightGrad: gradient(.postAttentionNorm))

        let hiddenBF16 = try kernels.bf16(hiddenGrad)
        let attentionOutputGrad = try ops.inputGradient(hiddenBF16, matrix(.output))
        try ops.weightGradient(hiddenBF16, a.mlp.outputBF16, into: gradient(.output))
        let outputGrad = try kernels.bf16(attentionOutputGrad).reshaped(a.output.shape)
        let grads = try ops.clock.time("attention") {
            try attention.backward(query: a.query, key: a.key, value: a.value, positions: positions,
                                   output: a.output, logSumExp: a.logSumExp, outputGrad: outputGrad)
        }
        try kernels.rotaryBackward(grads.query, rope)
        try kernels.rotaryBackward(grads.key, rope)

        let inputNormedGrad = try ops.blocks.filled([rows, config.dim], with: 0, like: nil)
        for (grad, tensor) in [(grads.query, LayerTensor.query), (grads.key, .key), (grads.value, .value)] {
            let gradBF16 = try kernels.bf16(grad).reshaped([rows, grad.count / rows])
            try ops.multiply(gradBF16, matrix(tensor), into: inputNormedGrad, beta: 1)
            try ops.weightGradient(gradBF16, a.normed, into: gradient(tensor))
        }
        let inputGrad = try ops.copy(hiddenGrad)
        try kernels.rmsNormBackward(a.input, inverseRMS: a.inverseRMS, weight: master(.inputNorm),
                                    outputGrad: inputNormedGrad, inputGrad: inputGrad, weightGrad: gradient(.inputNorm))
        return inputGrad
    }
}
