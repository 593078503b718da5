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
    let logSumExp: DeviceTensor       // LSE, fp32 [B, H, n]
    let mlp: DeviceMLPActivations
}

/// What the layer computes from O on (the part `remat` recomputes).
struct DeviceMLPActivations {
    /// O rounded to bf16 once, `[B, n, H, D]` (by the attention itself): what the W_o GEMM reads (as `[T, H·D]`)
    /// and the attention's backward takes for δ = rowsum(dO ∘ O), as FlashAttention's does.
    let output: DeviceTensor
    let hidden: DeviceTensor          // h = x + O·W_oᵀ, fp32 [T, E]
    let inverseRMS: DeviceTensor      // r₂, fp32 [T]
    let normed: DeviceTensor          // x̂₂, bf16 [T, E]
    /// The projections of every row when the strategy keeps everything (`none`); otherwise nil, and they are
    /// computed `mlpChunkRows` rows at a time wherever needed, so no [T, F] tensor is ever whole.
    let projections: DeviceMLPProjections?
}

/// The MLP's projections of some rows, bf16 `[rows, F]`: gate and up (the GEMMs' fp32 sums rounded once, as
/// autocast does) and a = silu(gate)·up.
struct DeviceMLPProjections {
    let gate: DeviceTensor
    let up: DeviceTensor
    let activated: DeviceTensor
}

/// The residual stream's gradient at a layer boundary: fp32 `[T, E]` (it accumulates through the layer) and its
/// bf16 rounding (what the layer's first GEMMs read), both written by the RMSNorm backward that completes it.
struct ResidualGradient {
    let value: DeviceTensor
    let bf16: DeviceTensor
}

/// A tensor a layer keeps for its backward: on the device, or parked in pinned host memory (`offload`).
enum SavedTensor {
    case device(DeviceTensor)
    case host(HostOffload.Parked)

    /// The tensor on the device (a parked one's copy back is waited for on the compute stream).
    func load() throws -> DeviceTensor {
        switch self {
        case .device(let tensor): return tensor
        case .host(let parked): return try parked.load()
        }
    }

    /// Starts a parked tensor's copy back, to overlap the work queued next.
    func fetch() throws { if case .host(let parked) = self { try parked.fetch() } }
}

/// What a layer keeps between its forward and its backward, by checkpoint strategy. `remat` keeps O in bf16, as
/// the W_o GEMM and the attention's backward read it (half the bytes of the fp32 O: 2 GiB over llama-1b's 16
/// layers at 32k tokens).
enum DeviceSavedLayer {
    case all(DeviceLayerActivations)
    case input(SavedTensor)
    /// `attentionInputs`: Q and K after RoPE and V, kept only where the checkpoint waits in host memory (there they
    /// cost no device memory, and the backward skips their GEMMs and RoPE: 3/16 of llama-1b's recomputed FLOPs);
    /// nil: recomputed from x.
    case inputAndAttention(SavedTensor, outputBF16: SavedTensor, logSumExp: DeviceTensor,
                           attentionInputs: (query: SavedTensor, key: SavedTensor, value: SavedTensor)?)

    /// The checkpoint of `strategy`; with `offload`, its large tensors (x; with `remat` also O, Q, K, V) parked in
    /// host memory as one group (LSE, 1/64 of O at D = 64, stays). `none` keeps everything on the device.
    init(_ activations: DeviceLayerActivations, strategy: CheckpointStrategy, parkingIn offload: HostOffload?) throws {
        let a = activations
        switch (strategy, offload) {
        case (.none, _):
            self = .all(a)
        case (.layer, nil):
            self = .input(.device(a.input))
        case (.layer, let offload?):
            self = .input(.host(try offload.park([a.input])[0]))
        case (.remat, nil):
            self = .inputAndAttention(.device(a.input), outputBF16: .device(a.mlp.output), logSumExp: a.logSumExp,
                                      attentionInputs: nil)
        case (.remat, let offload?):
            let parked = try offload.park([a.input, a.mlp.output, a.query, a.key, a.value]).map(SavedTensor.host)
            self = .inputAndAttention(parked[0], outputBF16: parked[1], logSumExp: a.logSumExp,
                                      attentionInputs: (parked[2], parked[3], parked[4]))
        }
    }

    /// Starts the copies back of whatever is parked (the backward calls it one layer ahead).
    func fetch() throws {
        switch self {
        case .all: break
        case .input(let x): try x.fetch()
        case .inputAndAttention(let x, let output, _, let inputs):
            for saved in [x, output] + (inputs.map { [$0.query, $0.key, $0.value] } ?? []) { try saved.fetch() }
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
    /// Rows of the MLP's [T, F] intermediates (gate, up, a and their gradients) computed at once.
    let mlpChunkRows: Int

    private func slot(_ tensor: LayerTensor) -> Int { config.slot(index, tensor) }
    private func master(_ tensor: LayerTensor) -> DeviceTensor { weights.master[slot(tensor)] }
    private func matrix(_ tensor: LayerTensor) throws -> DeviceTensor { try weights.bf16(slot(tensor)) }
    private func gradient(_ tensor: LayerTensor) -> DeviceTensor { gradients[slot(tensor)] }
    /// Matrices read together (adjacent in the parameters, in order): the Q, K, V projections; gate and up.
    private static let qkv: [LayerTensor] = [.query, .key, .value], gateUp: [LayerTensor] = [.gate, .up]
    /// `tensors` stacked by rows in one bf16 copy (one cast), which a backward GEMM reads whole.
    private func stacked(_ tensors: [LayerTensor]) throws -> DeviceTensor {
        try weights.bf16(stacking: slot(tensors[0])..<slot(tensors[tensors.count - 1]) + 1)
    }
    /// Each matrix of `stacked(tensors)`, as a view of its rows (what the forward's GEMMs read).
    private func stackedParts(_ tensors: [LayerTensor]) throws -> [DeviceTensor] {
        try DeviceWeights.views(of: stacked(tensors), tensors.map { master($0).shape })
    }
    /// Their gradients, stacked the same way (adjacent views of one flat buffer).
    private func stackedGradient(_ tensors: [LayerTensor]) throws -> DeviceTensor {
        let parts = tensors.map(gradient)
        return try DeviceTensor.joined(parts, as: [parts.reduce(0) { $0 + $1.shape[0] }, config.dim])
    }
    private var qkvWidth: Int { (config.heads + 2 * config.kvHeads) * config.headDim }
    private var n: Int { positions.count }
    private var rows: Int { batch * n }

    /// x̂₁, Q, K, V from x.
    func attentionInputs(_ x: DeviceTensor) throws -> (inverseRMS: DeviceTensor, normed: DeviceTensor,
                                                       query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) {
        let (normed, inverseRMS) = try inputNorm(x)
        let (h, hkv, d) = (config.heads, config.kvHeads, config.headDim)
        // Q and K rounded to bf16 by their GEMMs, then rotated (as autocast does): half the bytes written and read.
        let matrices = try stackedParts(Self.qkv)
        let q = try ops.linear(normed, matrices[0], precision: .bfloat16).reshaped([batch, n, h, d])
        let k = try ops.linear(normed, matrices[1], precision: .bfloat16).reshaped([batch, n, hkv, d])
        let v = try ops.linear(normed, matrices[2], precision: .bfloat16)
        return (inverseRMS, normed, try ops.kernels.rotary(q, rope), try ops.kernels.rotary(k, rope),
                try v.reshaped([batch, n, hkv, d]))
    }

    /// x̂₁ (bf16) and r₁ from x.
    private func inputNorm(_ x: DeviceTensor) throws -> (normed: DeviceTensor, inverseRMS: DeviceTensor) {
        let (normed, inverseRMS) = try ops.kernels.rmsNormForward(x, weight: master(.inputNorm), epsilon: config.normEps)
        return (normed, inverseRMS)
    }

    /// h, x̂₂ from x and O (bf16 `[B, n, H, D]`); with `keepProjections`, also gate, up and a of every row.
    func mlpActivations(input x: DeviceTensor, attentionOutput: DeviceTensor, keepProjections: Bool) throws
        -> DeviceMLPActivations {
        let hidden = try ops.multiply(attentionOutput.reshaped([rows, config.heads * config.headDim]), matrix(.output),
                                      transposeB: true, adding: x)
        let (normed, inverseRMS) = try ops.kernels.rmsNormForward(hidden, weight: master(.postAttentionNorm),
                                                                  epsilon: config.normEps)
        return DeviceMLPActivations(output: attentionOutput, hidden: hidden, inverseRMS: inverseRMS, normed: normed,
                                    projections: keepProjections ? try projections(normed: normed) : nil)
    }

    /// gate, up and a of the rows of x̂₂ `normed` (`[rows, E]`).
    private func projections(normed: DeviceTensor) throws -> DeviceMLPProjections {
        let (gate, up) = try gateAndUp(normed: normed)
        return DeviceMLPProjections(gate: gate, up: up, activated: try ops.kernels.swiGLUForward(gate: gate, up: up))
    }

    /// x̂₂·W_gᵀ and x̂₂·W_uᵀ of the rows of `normed` (`[rows, E]`), bf16 `[rows, F]` (W_g, W_u: views of their
    /// stacked copy, which the backward's GEMMs read whole).
    private func gateAndUp(normed: DeviceTensor) throws -> (gate: DeviceTensor, up: DeviceTensor) {
        let matrices = try stackedParts(Self.gateUp)
        return (try ops.linear(normed, matrices[0], precision: .bfloat16),
                try ops.linear(normed, matrices[1], precision: .bfloat16))
    }

    /// gate, up and a of rows `range`: views of the kept ones, or computed now.
    private func projections(_ mlp: DeviceMLPActivations, rows range: Range<Int>) throws -> DeviceMLPProjections {
        guard let kept = mlp.projections else { return try projections(normed: try rowsOf(mlp.normed, range)) }
        return DeviceMLPProjections(gate: try rowsOf(kept.gate, range), up: try rowsOf(kept.up, range),
                                    activated: try rowsOf(kept.activated, range))
    }

    /// The MLP's row chunks: `mlpChunkRows` rows each, the last one shorter.
    private var mlpChunks: [Range<Int>] {
        stride(from: 0, to: rows, by: mlpChunkRows).map { $0..<min($0 + mlpChunkRows, rows) }
    }

    /// Rows `range` of a `[T, …]` tensor as a `[range.count, width]` view (writes show through).
    private func rowsOf(_ x: DeviceTensor, _ range: Range<Int>) throws -> DeviceTensor {
        let width = x.count / rows
        return try x.elements(range.lowerBound * width..<range.upperBound * width, as: [range.count, width])
    }

    /// y = h + a·W_dᵀ, a chunk of rows at a time; in h's own memory when `overwritingHidden` (nothing reads h
    /// again: strategies that do not keep this layer's activations), else in a copy.
    func output(_ mlp: DeviceMLPActivations, overwritingHidden: Bool) throws -> DeviceTensor {
        let y = overwritingHidden ? mlp.hidden : try ops.copy(mlp.hidden)
        for range in mlpChunks {
            try ops.multiply(try projections(mlp, rows: range).activated, matrix(.down), transposeB: true,
                             into: try rowsOf(y, range), beta: 1)
        }
        return y
    }

    /// Every activation (one attention forward); the MLP's projections only with `keepProjections`.
    func forward(_ x: DeviceTensor, keepProjections: Bool) throws -> DeviceLayerActivations {
        let inputs = try attentionInputs(x)
        let result = try ops.clock.time("attention") {
            try attention.forward(query: inputs.query, key: inputs.key, value: inputs.value, positions: positions)
        }
        return DeviceLayerActivations(input: x, inverseRMS: inputs.inverseRMS, normed: inputs.normed, query: inputs.query,
                                      key: inputs.key, value: inputs.value, logSumExp: result.logSumExp,
                                      mlp: try mlpActivations(input: x, attentionOutput: result.output,
                                                              keepProjections: keepProjections))
    }

    /// The activations a saved layer lacks (`remat` restarts from the saved O: no attention forward).
    func restore(_ saved: DeviceSavedLayer) throws -> DeviceLayerActivations {
        switch saved {
        case .all(let activations):
            return activations
        case .input(let x):
            return try forward(x.load(), keepProjections: false)
        case .inputAndAttention(let saved, let outputBF16, let logSumExp, let kept):
            let x = try saved.load()
            let inputs = try kept.map { kept in
                let (normed, inverseRMS) = try inputNorm(x)
                return (inverseRMS: inverseRMS, normed: normed, query: try kept.query.load(), key: try kept.key.load(),
                        value: try kept.value.load())
            } ?? attentionInputs(x)
            return DeviceLayerActivations(input: x, inverseRMS: inputs.inverseRMS, normed: inputs.normed,
                                          query: inputs.query, key: inputs.key, value: inputs.value,
                                          logSumExp: logSumExp,
                                          mlp: try mlpActivations(input: x, attentionOutput: try outputBF16.load(),
                                                                  keepProjections: false))
        }
    }

    /// dx from dy; writes the layer's weight gradients (as the CPU layer's backward computes them). dy's fp32
    /// tensor is consumed:
    /// the residual stream's gradient accumulates in it (dy → dh → dx), and it comes back as dx's. Each stage's
    /// temporaries live only in its own function, so at most one stage's are held at a time.
    func backward(_ a: DeviceLayerActivations, outputGrad dy: ResidualGradient) throws -> ResidualGradient {
        let hiddenGrad = try mlpBackward(a.mlp, outputGrad: dy)
        let outputGrad = try outputProjectionBackward(a, hiddenGrad: hiddenGrad)
        // [dQ | dK | dV] in bf16, rotated back where RoPE applies: the Q, K, V projections' one GEMM input. dQ goes
        // there straight from the attention where it can (no fp32 dQ), else through RoPE's backward kernel.
        let projectionGrads = try DeviceTensor.unfilled(ops.blocks.device, shape: [rows, qkvWidth],
                                                        precision: .bfloat16)
        let queryColumns = TrainingKernels.ColumnSlice(projectionGrads, first: 0)
        let grads = try ops.clock.time("attention") { () throws -> (query: DeviceTensor?, key: DeviceTensor,
                                                                    value: DeviceTensor) in
            if let fused = try attention.backward(query: a.query, key: a.key, value: a.value, positions: positions,
                                                  output: a.mlp.output, logSumExp: a.logSumExp, outputGrad: outputGrad,
                                                  rotatingQueryGradBy: rope, into: queryColumns) {
                return (nil, fused.key, fused.value)
            }
            let grads = try attention.backward(query: a.query, key: a.key, value: a.value, positions: positions,
                                               output: a.mlp.output, logSumExp: a.logSumExp, outputGrad: outputGrad)
            return (grads.query, grads.key, grads.value)
        }
        if let queryGrad = grads.query { try ops.kernels.rotaryBackward(queryGrad, rope, into: queryColumns) }
        return try attentionInputsBackward(a, projectionGrads, keyGrad: grads.key, valueGrad: grads.value,
                                           inputGrad: dy.value)
    }

    /// dh: adds into dy's fp32 tensor the gradient through the MLP and RMSNorm₂, a chunk of rows at a time (its
    /// [rows, F] tensors — projections, da, dg, du — never exist whole); writes W_d's, W_g's, W_u's and the norm's.
    private func mlpBackward(_ mlp: DeviceMLPActivations, outputGrad dy: ResidualGradient) throws -> ResidualGradient {
        let kernels = ops.kernels
        // dx̂₂ in bf16, as its GEMM rounds it (autocast's way; half the bytes the RMSNorm backward reads). Every
        // row is first written by its chunk's gate GEMM (β = 0): no fill.
        let normedGrad = try DeviceTensor.unfilled(ops.blocks.device, shape: [rows, config.dim], precision: .bfloat16)
        let (gateUpWeights, gateUpGradients) = (try stacked(Self.gateUp), try stackedGradient(Self.gateUp))  // [2F, E]
        for range in mlpChunks {
            let dyRows = try rowsOf(dy.bf16, range)
            let activatedGrad = try ops.inputGradient(dyRows, matrix(.down), precision: .bfloat16)
            let (activated, gateUpGrad) = try activationsAndGradients(mlp, rows: range, activatedGrad: activatedGrad)
            let later = range.lowerBound > 0  // the first chunk writes the weights' gradients, later ones add
            try ops.weightGradient(dyRows, activated, into: gradient(.down), accumulating: later)
            // [dg | du] · [W_g; W_u] and [dg | du]ᵀ · x̂₂: one GEMM each for both projections.
            try ops.multiply(gateUpGrad, gateUpWeights, into: try rowsOf(normedGrad, range))
            try ops.weightGradient(gateUpGrad, try rowsOf(mlp.normed, range), into: gateUpGradients,
                                   accumulating: later)
        }
        let hiddenGrad = try ResidualGradient(value: dy.value, bf16: bf16Like(dy.value))
        try kernels.rmsNormBackward(mlp.hidden, inverseRMS: mlp.inverseRMS, weight: master(.postAttentionNorm),
                                    outputGrad: normedGrad, inputGrad: hiddenGrad.value, inputGradBF16: hiddenGrad.bf16,
                                    weightGrad: gradient(.postAttentionNorm), accumulatingWeightGrad: false)
        return hiddenGrad
    }

    /// An unfilled bf16 tensor of x's shape.
    private func bf16Like(_ x: DeviceTensor) throws -> DeviceTensor {
        try DeviceTensor.unfilled(ops.blocks.device, shape: x.shape, precision: .bfloat16)
    }

    /// a and [dg | du] (bf16, `[rows, F]` and `[rows, 2F]`) of rows `range` given their da: from the kept
    /// projections, or — strategies that keep none — with gate and up recomputed and a formed in the same pass as
    /// the gradients.
    private func activationsAndGradients(_ mlp: DeviceMLPActivations, rows range: Range<Int>, activatedGrad: DeviceTensor)
        throws -> (activated: DeviceTensor, gradients: DeviceTensor) {
        let kernels = ops.kernels
        guard mlp.projections == nil else {
            let kept = try projections(mlp, rows: range)
            return (kept.activated, try kernels.swiGLUBackward(gate: kept.gate, up: kept.up, outputGrad: activatedGrad))
        }
        let (gate, up) = try gateAndUp(normed: try rowsOf(mlp.normed, range))
        return try kernels.swiGLUForwardBackward(gate: gate, up: up, outputGrad: activatedGrad)
    }

    /// dO (bf16, O's shape) from dh through W_o; writes W_o's gradient.
    private func outputProjectionBackward(_ a: DeviceLayerActivations, hiddenGrad: ResidualGradient) throws
        -> DeviceTensor {
        let attentionOutputGrad = try ops.inputGradient(hiddenGrad.bf16, matrix(.output), precision: .bfloat16)
        try ops.weightGradient(hiddenGrad.bf16, a.mlp.output, into: gradient(.output), accumulating: false)
        return try attentionOutputGrad.reshaped(a.mlp.output.shape)
    }

    /// dx: adds into `inputGrad` (dh's fp32 tensor) the gradient through RoPE, the Q, K, V projections and
    /// RMSNorm₁ from the attention's dK, dV (fp32) and `projectionGrads` `[T, (H + 2·H_kv)·D]` bf16 holding dQ
    /// rotated back in its first H·D columns: dK rotated back and dV go into the others (each rounded to bf16 once),
    /// so one GEMM with the stacked weights gives dx̂₁ and one more their three gradients; writes their weights'
    /// gradients.
    private func attentionInputsBackward(_ a: DeviceLayerActivations, _ projectionGrads: DeviceTensor,
                                         keyGrad: DeviceTensor, valueGrad: DeviceTensor,
                                         inputGrad: DeviceTensor) throws -> ResidualGradient {
        let kernels = ops.kernels
        let (h, hkv, d) = (config.heads, config.kvHeads, config.headDim)
        try kernels.rotaryBackward(keyGrad, rope, into: .init(projectionGrads, first: h * d))
        try kernels.bf16(valueGrad.reshaped([rows, hkv * d]), into: .init(projectionGrads, first: (h + hkv) * d))
        let inputNormedGrad = try DeviceTensor.unfilled(ops.blocks.device, shape: [rows, config.dim],
                                                        precision: .bfloat16)  // dx̂₁, rounded as dx̂₂
        try ops.multiply(projectionGrads, stacked(Self.qkv), into: inputNormedGrad)  // β = 0: no fill
        try ops.weightGradient(projectionGrads, a.normed, into: stackedGradient(Self.qkv), accumulating: false)
        let inputGradBF16 = try bf16Like(inputGrad)
        try kernels.rmsNormBackward(a.input, inverseRMS: a.inverseRMS, weight: master(.inputNorm),
                                    outputGrad: inputNormedGrad, inputGrad: inputGrad, inputGradBF16: inputGradBF16,
                                    weightGrad: gradient(.inputNorm), accumulatingWeightGrad: false)
        return ResidualGradient(value: inputGrad, bf16: inputGradBF16)
    }
}
