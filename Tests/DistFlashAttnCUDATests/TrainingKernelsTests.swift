import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Testing

/// Each training kernel against the CPU layer of the same name (itself checked against float64 and finite
/// differences), on fresh random inputs of odd sizes. bf16 outputs may differ from the CPU value rounded to bf16 by
/// one bf16 step (the fp32 values before rounding differ in their last bits); fp32 outputs by a few fp32 steps of
/// the terms they sum.
@Suite("Training kernels")
struct TrainingKernelsTests {
    static func random(_ shape: [Int], _ random: inout SeededRandom) -> Tensor { random.normalTensor(shape: shape) }

    /// The worst |got − want| / (relative·|want| + absolute) over the elements: ≤ 1 passes.
    static func worst(_ got: Tensor, _ want: Tensor, relative: Float, absolute: Float) -> Float {
        zip(got.scalars, want.scalars).map { abs($0 - $1) / (relative * abs($1) + absolute) }.max() ?? 0
    }

    /// bf16 output against the CPU's fp32 value: one bf16 step (2⁻⁸ relative) plus fp32 noise.
    static func worstBF16(_ got: Tensor, _ want: Tensor) -> Float { worst(got, want, relative: 0x1p-8, absolute: 1e-6) }

    /// Widths one at a time (211; 2052 in the forward: wider than a warp's row) and four at a time (1100, 36, 2048:
    /// rows held in registers; 2052 in the backward: not held); 2063 rows give blocks of 3 rows, the last one short.
    @Test("RMSNorm forward and backward (fp32 or bf16 dy) equal the CPU layer; the bf16 dx is the fp32 dx rounded",
          .enabled(if: gpu != nil),
          arguments: [(111, 211), (111, 1100), (2063, 36), (37, 2048), (29, 2052)])
    func rmsNorm(_ rows: Int, _ width: Int) throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (x, w, dy) = (Self.random([rows, width], &rng), Self.random([width], &rng), Self.random([rows, width], &rng))
        var (dx, dw) = (Self.random(x.shape, &rng), Self.random([width], &rng))
        let (y, r) = try RMSNorm.forward(x, weight: w, epsilon: 1e-5)
        let (dxStart, dwStart) = (dx, dw)
        try RMSNorm.backward(x, inverseRMS: r, weight: w, outputGrad: dy, inputGrad: &dx, weightGrad: &dw)

        let upload = { (t: Tensor) in try DeviceTensor.upload(t, to: gpu!, as: .float32) }
        let (gx, gw) = (try upload(x), try upload(w))
        let forward = try kernels.rmsNormForward(gx, weight: gw, epsilon: 1e-5)
        #expect(Self.worstBF16(try forward.output.download(), y) <= 1)
        #expect(Self.worst(try forward.inverseRMS.download(), r, relative: 1e-5, absolute: 0) <= 1)
        let (gdx, gdw) = (try upload(dxStart), try upload(dwStart))
        let gdxBF16 = try DeviceTensor.unfilled(gpu!, shape: x.shape, precision: .bfloat16)
        try kernels.rmsNormBackward(gx, inverseRMS: forward.inverseRMS, weight: gw, outputGrad: try upload(dy),
                                    inputGrad: gdx, inputGradBF16: gdxBF16, weightGrad: gdw)
        #expect(Self.worst(try gdx.download(), dx, relative: 1e-5, absolute: 1e-5) <= 1)
        #expect(try gdxBF16.download().scalars == gdx.download().roundedToBFloat16().scalars)
        #expect(Self.worst(try gdw.download(), dw, relative: 1e-5, absolute: 1e-4 * Float(rows) / 111) <= 1)  // row sums

        // dy in bf16 (as a GEMM rounds it): the CPU layer on the same rounded dy.
        var (dxOfRounded, dwOfRounded) = (dxStart, dwStart)
        try RMSNorm.backward(x, inverseRMS: r, weight: w, outputGrad: dy.roundedToBFloat16(), inputGrad: &dxOfRounded,
                             weightGrad: &dwOfRounded)
        let (hdx, hdw) = (try upload(dxStart), try upload(dwStart))
        try kernels.rmsNormBackward(gx, inverseRMS: forward.inverseRMS, weight: gw,
                                    outputGrad: try DeviceTensor.upload(dy, to: gpu!, as: .bfloat16), inputGrad: hdx,
                                    weightGrad: hdw)
        #expect(Self.worst(try hdx.download(), dxOfRounded, relative: 1e-5, absolute: 1e-5) <= 1)
        #expect(Self.worst(try hdw.download(), dwOfRounded, relative: 1e-5, absolute: 1e-4 * Float(rows) / 111) <= 1)
    }

    /// D = 64 rotates four pairs a thread, D = 6 one.
    @Test("rotary embedding forward (fp32 or bf16 in) and backward equal the CPU layer at scattered positions",
          .enabled(if: gpu != nil), arguments: [64, 6])
    func rotary(_ headDim: Int) throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let positions = (0..<23).map { 7 * $0 + Int.random(in: 0..<7, using: &rng) + ($0 % 2) * 5000 }
        let rope = try RotaryEmbedding(positions: positions, headDim: headDim, theta: 10_000)
        let tables = try TrainingKernels.RotaryTables(device: gpu!, cosines: rope.cosines, sines: rope.sines,
                                                      tokens: positions.count, headDim: headDim)
        let x = Self.random([2, 23, 3, headDim], &rng)
        var (rotated, gradient) = (x, x)
        try rope.apply(to: &rotated)
        try rope.applyBackward(to: &gradient)
        let gx = try DeviceTensor.upload(x, to: gpu!, as: .float32)
        #expect(Self.worstBF16(try kernels.rotary(gx, tables).download(), rotated) <= 1)
        // bf16 in (the projections as their GEMMs write them): the CPU layer on the same rounded values.
        var rotatedOfRounded = x.roundedToBFloat16()
        try rope.apply(to: &rotatedOfRounded)
        let rounded = try DeviceTensor.upload(x, to: gpu!, as: .bfloat16)
        #expect(Self.worstBF16(try kernels.rotary(rounded, tables).download(), rotatedOfRounded) <= 1)
        let dense = try kernels.rotaryBackward(gx, tables)
        #expect(Self.worstBF16(try dense.download(), gradient) <= 1)
        // Into columns 4 … 4 + 3·D of a [46, 3·D + 12] matrix (four at a time at D = 64): the same values there,
        // the other columns untouched.
        let width = 3 * headDim + 12
        let wide = try DeviceTensor.upload(Tensor(shape: [46, width]), to: gpu!, as: .bfloat16)
        try kernels.rotaryBackward(gx, tables, into: .init(wide, first: 4))
        let (got, want) = (try wide.download().scalars, try dense.download().scalars)
        let columns = 3 * headDim
        for row in 0..<46 {
            let start = row * width + 4
            #expect(Array(got[start..<start + columns]) == Array(want[row * columns..<(row + 1) * columns]))
            #expect((got[row * width..<start] + got[start + columns..<(row + 1) * width]).allSatisfy { $0 == 0 })
        }
        #expect(throws: DistFlashError.self) { try kernels.rotaryBackward(gx, tables, into: .init(wide, first: 13)) }
    }

    /// Columns at a multiple of four (four at a time) and not.
    @Test("fp32 → bf16 into columns of a wider matrix equals the plain cast there", .enabled(if: gpu != nil),
          arguments: [4, 3])
    func castIntoColumns(_ first: Int) throws {
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let x = Self.random([13, 36], &rng)
        let kernels = TrainingKernels(device: gpu!)
        let wide = try DeviceTensor.upload(Tensor(shape: [13, 47]), to: gpu!, as: .bfloat16)
        try kernels.bf16(try DeviceTensor.upload(x, to: gpu!, as: .float32), into: .init(wide, first: first))
        let (got, want) = (try wide.download().scalars, x.roundedToBFloat16().scalars)
        for row in 0..<13 {
            #expect(Array(got[row * 47 + first..<row * 47 + first + 36]) == Array(want[row * 36..<(row + 1) * 36]))
        }
        #expect(throws: DistFlashError.self) {
            try kernels.bf16(try DeviceTensor.upload(x, to: gpu!, as: .float32), into: .init(wide, first: 12))
        }
    }

    /// F = 332: four elements a thread; F = 333: one. dg and du come side by side, [rows, 2F].
    @Test("SwiGLU forward and backward (bf16 in and out) equal the CPU layer, aligned or not; fused, they equal the two",
          .enabled(if: gpu != nil), arguments: [332, 333])
    func swiGLU(_ width: Int) throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        // bf16 inputs, as the GEMMs write them: the CPU layer gets the same rounded values.
        let operand = { (rng: inout SeededRandom) in Self.random([5, width], &rng).roundedToBFloat16() }
        let (g, u, da) = (operand(&rng), operand(&rng), operand(&rng))
        let upload = { (t: Tensor) in try DeviceTensor.upload(t, to: gpu!, as: .bfloat16) }
        let (gg, gu, gda) = (try upload(g), try upload(u), try upload(da))
        let a = try SwiGLU.forward(gate: g, up: u)
        let (dg, du) = try SwiGLU.backward(gate: g, up: u, outputGrad: da)
        #expect(Self.worstBF16(try kernels.swiGLUForward(gate: gg, up: gu).download(), a) <= 1)
        // [dg | du] per row, split back into the two.
        let halves = { (t: DeviceTensor) throws -> (Tensor, Tensor) in
            let rows = try t.download().scalars
            let part = { (offset: Int) in
                try Tensor(shape: [5, width],
                           scalars: (0..<5).flatMap { rows[(2 * $0 + offset) * width..<(2 * $0 + offset + 1) * width] })
            }
            return (try part(0), try part(1))
        }
        let grads = try kernels.swiGLUBackward(gate: gg, up: gu, outputGrad: gda)
        #expect(grads.shape == [5, 2 * width])
        let (gotDG, gotDU) = try halves(grads)
        #expect(Self.worstBF16(gotDG, dg) <= 1)
        #expect(Self.worstBF16(gotDU, du) <= 1)
        let fused = try kernels.swiGLUForwardBackward(gate: gg, up: gu, outputGrad: gda)
        #expect(try fused.activated.download().scalars == kernels.swiGLUForward(gate: gg, up: gu).download().scalars)
        #expect(try fused.gradients.download().scalars == grads.download().scalars)
        // The forward on views one element in (no 8-byte alignment: one element a thread).
        let view = { (t: DeviceTensor) in try t.elements(1..<t.count, as: [t.count - 1]) }
        let tail = { (t: Tensor) in try Tensor(shape: [t.count - 1], scalars: Array(t.scalars.dropFirst())) }
        #expect(Self.worstBF16(try kernels.swiGLUForward(gate: view(gg), up: view(gu)).download(),
                               try SwiGLU.forward(gate: tail(g), up: tail(u))) <= 1)
    }

    @Test("cross-entropy loss, LSE, accuracy and gradient equal the CPU layer (unlabelled rows included)",
          .enabled(if: gpu != nil))
    func crossEntropy() throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (rows, vocab) = (29, 1000)
        let logits = Self.random([rows, vocab], &rng)
        let labels: [Int32] = (0..<rows).map { $0 % 7 == 3 ? -1 : Int32.random(in: 0..<Int32(vocab), using: &rng) }
        let normalizer = 3 * rows  // as if two more ranks held labelled tokens
        let (loss, lse) = try CrossEntropy.forward(logits: logits, labels: labels, normalizer: normalizer)
        let correct = try CrossEntropy.correctPredictions(logits: logits, labels: labels)
        let dz = try CrossEntropy.backward(logits: logits, labels: labels, logSumExp: lse, normalizer: normalizer)

        let gz = try DeviceTensor.upload(logits, to: gpu!, as: .float32)
        let result = try kernels.crossEntropyForward(logits: gz, labels: labels, normalizer: normalizer)
        #expect(abs(result.loss - loss) <= 1e-5 * abs(loss))
        #expect(result.correct == correct)
        #expect(Self.worst(try result.logSumExp.download(), try Tensor(shape: [rows], scalars: lse),
                           relative: 1e-6, absolute: 0) <= 1)
        let gdz = try kernels.crossEntropyBackward(logits: gz, result, normalizer: normalizer)
        #expect(Self.worst(try gdz.download(), dz, relative: 0x1p-8, absolute: 1e-9) <= 1)
    }

    @Test("embedding lookup and scatter-add (repeated tokens) equal the CPU layer", .enabled(if: gpu != nil))
    func embedding() throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (vocab, width) = (97, 45)
        let table = Self.random([vocab, width], &rng)
        let tokens: [Int32] = (0..<301).map { _ in Int32.random(in: 0..<20, using: &rng) }  // many repeats
        let dy = Self.random([tokens.count, width], &rng)
        let y = try Embedding.forward(tokens: tokens, batch: 1, table: table)
        var dtable = Self.random([vocab, width], &rng)
        let gdtable = try DeviceTensor.upload(dtable, to: gpu!, as: .float32)
        Embedding.backward(tokens: tokens, outputGrad: dy, tableGrad: &dtable)

        let gy = try kernels.embeddingForward(tokens: tokens, table: try DeviceTensor.upload(table, to: gpu!, as: .float32))
        #expect(try gy.download().scalars == y.scalars)
        try kernels.embeddingBackward(tokens: tokens, outputGrad: try DeviceTensor.upload(dy, to: gpu!, as: .float32),
                                      tableGrad: gdtable)
        #expect(Self.worst(try gdtable.download(), dtable, relative: 1e-5, absolute: 1e-5) <= 1)
        #expect(throws: DistFlashError.self) {
            try kernels.embeddingForward(tokens: [0, Int32(vocab)], table: try DeviceTensor.upload(table, to: gpu!, as: .float32))
        }
    }

    @Test("AdamW on a matrix and a norm in one buffer equals the CPU optimizer (decay on the matrix only)",
          .enabled(if: gpu != nil))
    func adamW() throws {
        let kernels = TrainingKernels(device: gpu!)
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (weight, norm) = (Self.random([13, 31], &rng), Self.random([7], &rng))
        var parameters = Parameters([(name: "w", tensor: weight), (name: "n", tensor: norm)])
        var optimizer = try AdamW(parameters: parameters)
        let h = optimizer.hyperparameters
        let flat = { (a: Tensor, b: Tensor) in try Tensor(shape: [a.count + b.count], scalars: a.scalars + b.scalars) }
        let upload = { (t: Tensor) in try DeviceTensor.upload(t, to: gpu!, as: .float32) }
        let count = weight.count + norm.count
        let (theta, m, v) = (try upload(flat(weight, norm)), try upload(Tensor(shape: [count])),
                             try upload(Tensor(shape: [count])))
        let copy = try DeviceTensor.upload(Tensor(shape: [count]), to: gpu!, as: .bfloat16)
        let decay = try TrainingKernels.DecaySegments(device: gpu!, [(weight.count, h.weightDecay(forTensorOfRank: 2)),
                                                                     (norm.count, h.weightDecay(forTensorOfRank: 1))])
        for step in 1...3 {
            let (dw, dn) = (Self.random(weight.shape, &rng), Self.random(norm.shape, &rng))
            try optimizer.update(&parameters, gradients: Parameters([(name: "w", tensor: dw), (name: "n", tensor: dn)]),
                                 learningRate: 0.01)
            try kernels.adamW(theta, gradient: try upload(flat(dw, dn)), m: m, v: v, bf16Copy: copy, learningRate: 0.01,
                              beta1: h.beta1, beta2: h.beta2, epsilon: h.epsilon, weightDecay: decay, step: step)
        }
        #expect(Self.worst(try theta.download(), try flat(parameters.tensors[0], parameters.tensors[1]), relative: 1e-5,
                           absolute: 1e-6) <= 1)
        #expect(try copy.download().scalars == (try theta.download()).roundedToBFloat16().scalars)
        #expect(throws: DistFlashError.self) {  // segments that do not cover θ
            try kernels.adamW(theta, gradient: theta, m: m, v: v, bf16Copy: nil, learningRate: 0.01, beta1: h.beta1,
                              beta2: h.beta2, epsilon: h.epsilon,
                              weightDecay: try TrainingKernels.DecaySegments(device: gpu!, [(count - 1, 0)]), step: 4)
        }
    }

    @Test("fp32 → bf16 rounds to nearest even like the host, aligned or not", .enabled(if: gpu != nil))
    func cast() throws {
        var rng = SeededRandom(seed: .random(in: 0...UInt64.max))
        let x = Self.random([1001], &rng)
        let (kernels, device) = (TrainingKernels(device: gpu!), try DeviceTensor.upload(x, to: gpu!, as: .float32))
        // Whole (four at a time, the last one alone) and a view one element in (no 16-byte alignment: one at a time).
        #expect(try kernels.bf16(device).download().scalars == x.roundedToBFloat16().scalars)
        let shifted = try kernels.bf16(try device.elements(1..<1001, as: [1000])).download().scalars
        #expect(shifted == Array(x.roundedToBFloat16().scalars.dropFirst()))
    }

    @Test("mismatched shapes are errors that name them, before any launch", .enabled(if: gpu != nil))
    func shapeErrors() throws {
        let kernels = TrainingKernels(device: gpu!)
        let x = try DeviceTensor.upload(Tensor(shape: [4, 8]), to: gpu!, as: .float32)
        let w = try DeviceTensor.upload(Tensor(shape: [7]), to: gpu!, as: .float32)
        #expect(throws: DistFlashError.self) { try kernels.rmsNormForward(x, weight: w, epsilon: 1e-5) }
        #expect(throws: DistFlashError.self) { try kernels.swiGLUForward(gate: x, up: w) }
        #expect(throws: DistFlashError.self) { try kernels.crossEntropyForward(logits: x, labels: [0, 1, 2], normalizer: 1) }
        #expect(throws: DistFlashError.self) { try kernels.crossEntropyForward(logits: x, labels: [0, 1, 2, 8], normalizer: 1) }
    }
}
