import DistFlashAttn
import Foundation

/// The small kernels of a training step on one GPU (`kernels/training_ops.cu`), on the device's compute stream:
/// each computes what the CPU layer of the same name does. Activations that feed a GEMM or the attention come out
/// bf16; statistics, gradients, master weights and moments are fp32. Shapes are checked before any launch.
public struct TrainingKernels: Sendable {
    public let device: CUDADevice
    static let source = String(decoding: PackageResources.training_ops_cu, as: UTF8.self)
    /// Threads per block (the kernels' BLOCK).
    private static let block = 256
    /// RMSNorm's backward keeps E / 256 weight-gradient sums per thread (the kernels' RMS_MAX_PER_THREAD).
    static let maxNormWidth = 256 * 32

    /// Times every launch as its own phase, "kernel:NAME" (nil: no timing).
    public let clock: PhaseClock?

    public init(device: CUDADevice, clock: PhaseClock? = nil) { (self.device, self.clock) = (device, clock) }

    // MARK: RMSNorm

    /// y = w ∘ x · r (bf16 `[rows, E]`) and r = 1 / √(mean(x²) + ε) (fp32 `[rows]`) for x fp32 `[…, E]`, w `[E]`.
    public func rmsNormForward(_ x: DeviceTensor, weight: DeviceTensor, epsilon: Float) throws
        -> (output: DeviceTensor, inverseRMS: DeviceTensor) {
        let (rows, width) = try normRows(x, weight)
        let output = try DeviceTensor(device, shape: x.shape, precision: .bfloat16)
        let inverseRMS = try DeviceTensor(device, shape: Array(x.shape.dropLast()), precision: .float32)
        guard rows > 0 else { return (output, inverseRMS) }
        let operands: [CUDADevice.Argument] = [x, weight, output, inverseRMS].map { .pointer($0.address) }
        if width <= Self.warpRowWidth && Self.fourAtATime(width, [x, weight]) {  // a warp a row, held in registers
            let rowsPerBlock = Self.block / 32
            try launch("rmsnorm_forward_x4", grid: (rows + rowsPerBlock - 1) / rowsPerBlock,
                       operands + [.int(Int32(rows)), .int(Int32(width)), .float(epsilon)])
        } else {
            try launch("rmsnorm_forward", grid: rows, operands + [.int(Int32(width)), .float(epsilon)])
        }
        return (output, inverseRMS)
    }

    /// Adds dx into `inputGrad` (fp32, shape of x) and dw into `weightGrad` (fp32 `[E]`; written instead without
    /// `accumulatingWeightGrad`), given dy (fp32 or bf16, shape of x) and the forward's x and r; with `inputGradBF16`, also
    /// writes there the updated `inputGrad` rounded to bf16 (for the GEMM that reads it next). dw is summed over
    /// rows in a fixed order (deterministic).
    public func rmsNormBackward(_ x: DeviceTensor, inverseRMS: DeviceTensor, weight: DeviceTensor,
                                outputGrad: DeviceTensor, inputGrad: DeviceTensor, inputGradBF16: DeviceTensor? = nil,
                                weightGrad: DeviceTensor, accumulatingWeightGrad: Bool = true) throws {
        let (rows, width) = try normRows(x, weight)
        try require(outputGrad, outputGrad.precision == .bfloat16 ? .bfloat16 : .float32, x.shape, "RMSNorm dy")
        try require(inputGrad, .float32, x.shape, "RMSNorm dx")
        if let inputGradBF16 { try require(inputGradBF16, .bfloat16, x.shape, "RMSNorm dx in bf16") }
        try require(weightGrad, .float32, weight.shape, "RMSNorm dw")
        try require(inverseRMS, .float32, Array(x.shape.dropLast()), "RMSNorm r")
        guard rows > 0 else { return }
        // Rows a block: few enough that ≈ 1000 blocks keep every SM busy through the per-row barriers, many enough
        // that the partial sums stay small (1024 × E at most).
        let rowsPerBlock = max(1, (rows + 1023) / 1024)
        let blocks = (rows + rowsPerBlock - 1) / rowsPerBlock
        let partial = try DeviceTensor(device, shape: [blocks, width], precision: .float32)
        let operands = [x, weight, outputGrad, inputGrad] + (inputGradBF16.map { [$0] } ?? [])
        let name = !Self.fourAtATime(width, operands) ? "rmsnorm_backward"
            : width <= Self.heldRowWidth ? "rmsnorm_backward_x4_held" : "rmsnorm_backward_x4"
        try launch(name + (outputGrad.precision == .bfloat16 ? "_bf16" : ""), grid: blocks,
                   [.pointer(x.address), .pointer(weight.address), .pointer(inverseRMS.address),
                    .pointer(outputGrad.address), .pointer(inputGrad.address), .pointer(inputGradBF16?.address ?? 0),
                    .pointer(partial.address),
                    .int(Int32(rows)), .int(Int32(width)), .int(Int32(rowsPerBlock))])
        try launch("column_sums", grid: min((width + 31) / 32, 65_535),
                   [.pointer(partial.address), .pointer(weightGrad.address), .int(Int32(blocks)), .int(Int32(width)),
                    .int(accumulatingWeightGrad ? 1 : 0)])
    }

    // MARK: Rotary embedding

    /// cos and sin of each (token, frequency) angle `[n, D/2]`, as the CPU layer computes them, on the device.
    public struct RotaryTables: Sendable {
        let cosines: DeviceTensor
        let sines: DeviceTensor
        public var tokens: Int { cosines.shape[0] }
        public var headDim: Int { 2 * cosines.shape[1] }

        public init(device: CUDADevice, cosines: [Float], sines: [Float], tokens: Int, headDim: Int) throws {
            guard headDim >= 2, headDim % 2 == 0, cosines.count == tokens * headDim / 2, sines.count == cosines.count
            else {
                throw DistFlashError(.shapeMismatch, "rotary tables: \(cosines.count) cosines and \(sines.count) sines "
                    + "for n = \(tokens) tokens and D = \(headDim) (even): need n · D/2 each")
            }
            let shape = [tokens, headDim / 2]
            self.cosines = try .upload(try Tensor(shape: shape, scalars: cosines), to: device, as: .float32)
            self.sines = try .upload(try Tensor(shape: shape, scalars: sines), to: device, as: .float32)
        }
    }

    /// x (fp32 or bf16 `[B, n, heads, D]`) rotated by its tokens' angles, in bf16 (the attention's input).
    public func rotary(_ x: DeviceTensor, _ tables: RotaryTables) throws -> DeviceTensor {
        try rotate(x.precision == .bfloat16 ? "rope_forward_bf16" : "rope_forward", x, tables)
    }

    /// The backward of `rotary`: the gradient (fp32 `[B, n, heads, D]`) rotated back, in bf16 (the Q and K
    /// projections' GEMMs read it: one pass instead of a rotation in place and a cast).
    public func rotaryBackward(_ grad: DeviceTensor, _ tables: RotaryTables) throws -> DeviceTensor {
        try rotate("rope_backward", grad, tables)
    }

    /// `rotaryBackward` written into columns of a wider matrix: row (b, t) of the result goes to row b·n + t of
    /// `slice`, columns `slice.first …` (heads · D of them).
    public func rotaryBackward(_ grad: DeviceTensor, _ tables: RotaryTables, into slice: ColumnSlice) throws {
        _ = try rotate("rope_backward", grad, tables, into: slice)
    }

    /// Columns `first …` of a bf16 matrix `[rows, width]`: where a kernel writes a result that sits beside others
    /// (the Q, K and V gradients side by side, so one GEMM takes all three).
    public struct ColumnSlice {
        public let matrix: DeviceTensor
        public let first: Int
        public init(_ matrix: DeviceTensor, first: Int) { (self.matrix, self.first) = (matrix, first) }

        /// Checks that `rows` rows of `width` columns fit; returns the matrix's row stride.
        func stride(rows: Int, width: Int) throws -> Int {
            guard matrix.precision == .bfloat16, matrix.shape.count == 2, matrix.shape[0] == rows, first >= 0,
                  first + width <= matrix.shape[1] else {
                throw DistFlashError(.shapeMismatch, "columns \(first)..<\(first + width) of \(rows) rows do not "
                    + "fit in the \(matrix.precision) matrix \(matrix.shape) (bf16 [rows, ≥ first + width] expected)")
            }
            return matrix.shape[1]
        }
    }

    private func rotate(_ name: String, _ x: DeviceTensor, _ tables: RotaryTables, into slice: ColumnSlice? = nil)
        throws -> DeviceTensor {
        let pairs = try rotaryPairs(x, tables, bf16: name == "rope_forward_bf16")
        let width = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 0
        let output = try slice?.matrix ?? DeviceTensor(device, shape: x.shape, precision: .bfloat16)
        let stride = try slice?.stride(rows: x.count / max(width, 1), width: width) ?? width
        let column = slice?.first ?? 0
        if pairs > 0 {
            let fours = Self.fourAtATime(tables.headDim / 2, [x, output, tables.cosines, tables.sines])
                && stride % 4 == 0 && column % 4 == 0
            try launch(fours ? name + "_x4" : name, grid: gridStride(fours ? pairs / 4 : pairs),
                       [.pointer(x.address), .pointer(output.address), .pointer(tables.cosines.address),
                        .pointer(tables.sines.address), .int(Int32(tables.tokens)), .int(Int32(x.shape[2])),
                        .int(Int32(tables.headDim)), .int(Int32(pairs)), .int(Int32(stride)), .int(Int32(column))])
        }
        return output
    }

    // MARK: SwiGLU

    /// a = silu(g) · u in bf16 (the down projection's input), for g, u bf16 of one shape, computed in fp32.
    public func swiGLUForward(gate: DeviceTensor, up: DeviceTensor) throws -> DeviceTensor {
        try require(gate, .bfloat16, gate.shape, "SwiGLU gate")
        try require(up, .bfloat16, gate.shape, "SwiGLU up")
        let output = try DeviceTensor(device, shape: gate.shape, precision: .bfloat16)
        if gate.count > 0 {
            try launch("swiglu_forward", grid: gridStride(gate.count),
                       [.pointer(gate.address), .pointer(up.address), .pointer(output.address), .int64(Int64(gate.count))])
        }
        return output
    }

    /// [dg | du] rounded to bf16 — what the gate and up projections' GEMMs read — from da and the forward's g and u
    /// (all bf16 `[…, F]`, as the GEMMs write them), computed in fp32: no fp32 tensor of the MLP's width. dg and du
    /// come side by side, `[rows, 2F]` (dg in columns 0 ..< F), so one GEMM with the stacked W_g, W_u takes both.
    public func swiGLUBackward(gate: DeviceTensor, up: DeviceTensor, outputGrad: DeviceTensor) throws -> DeviceTensor {
        let (rows, width) = try swiGLURows(gate, up, outputGrad)
        let gradients = try DeviceTensor(device, shape: [rows, 2 * width], precision: .bfloat16)
        if gate.count > 0 {
            try launch("swiglu_backward", grid: gridStride(gate.count),
                       [gate, up, outputGrad, gradients].map { .pointer($0.address) }
                        + [.int64(Int64(gate.count)), .int(Int32(width))])
        }
        return gradients
    }

    /// `swiGLUForward` and `swiGLUBackward` in one pass over g, u, da (all bf16, one shape), for strategies that
    /// recompute a in the backward: a in bf16 (g's shape) and [dg | du] as `swiGLUBackward` gives them.
    public func swiGLUForwardBackward(gate: DeviceTensor, up: DeviceTensor, outputGrad: DeviceTensor) throws
        -> (activated: DeviceTensor, gradients: DeviceTensor) {
        let (rows, width) = try swiGLURows(gate, up, outputGrad)
        let activated = try DeviceTensor(device, shape: gate.shape, precision: .bfloat16)
        let gradients = try DeviceTensor(device, shape: [rows, 2 * width], precision: .bfloat16)
        if gate.count > 0 {
            try launch("swiglu_forward_backward", grid: gridStride(gate.count),
                       [gate, up, outputGrad, activated, gradients].map { .pointer($0.address) }
                        + [.int64(Int64(gate.count)), .int(Int32(width))])
        }
        return (activated, gradients)
    }

    /// Rows and width F of SwiGLU's backward operands (bf16, one shape, F = the last axis).
    private func swiGLURows(_ gate: DeviceTensor, _ up: DeviceTensor, _ outputGrad: DeviceTensor) throws
        -> (rows: Int, width: Int) {
        for (tensor, name) in [(gate, "gate"), (up, "up"), (outputGrad, "da")] {
            try require(tensor, .bfloat16, gate.shape, "SwiGLU \(name)")
        }
        let width = gate.shape.last ?? 1
        guard width >= 1, width <= Int(Int32.max) else {
            throw DistFlashError(.shapeMismatch, "SwiGLU operands \(gate.shape): the last axis must be 1 … 2³¹ − 1")
        }
        return (gate.count / width, width)
    }

    // MARK: Cross-entropy

    /// One forward's results: the loss (labelled rows' LSE − z[label], summed in float64, divided by N), each
    /// row's LSE (fp32 `[T]`, for the backward) and how many labelled rows' first largest logit is the label.
    public struct CrossEntropyResult: Sendable {
        public let loss: Double
        public let logSumExp: DeviceTensor
        public let correct: Int
        let labels: DeviceBuffer
    }

    /// Cross-entropy of logits (fp32 `[T, V]`) against labels (`[T]`, −1: no loss), normalised by N ≥ 1 (the
    /// labelled tokens over all ranks, so the ranks' losses add up to the global mean).
    public func crossEntropyForward(logits: DeviceTensor, labels: [Int32], normalizer: Int) throws -> CrossEntropyResult {
        let vocab = try checkCrossEntropy(logits, labels, normalizer)
        let rows = labels.count
        let labelBuffer = try DeviceBuffer.upload(device, labels)
        let logSumExp = try DeviceTensor(device, shape: [rows], precision: .float32)
        let losses = try DeviceBuffer(device, bytes: rows * 4), correct = try DeviceBuffer(device, bytes: rows * 4)
        guard rows > 0 else { return CrossEntropyResult(loss: 0, logSumExp: logSumExp, correct: 0, labels: labelBuffer) }
        try launch("cross_entropy_forward", grid: rows,
                   [.pointer(logits.address), .pointer(labelBuffer.address), .pointer(logSumExp.address),
                    .pointer(losses.address), .pointer(correct.address), .int(Int32(vocab))])
        let loss = try losses.download(rows, as: Float.self, initial: 0).reduce(0.0) { $0 + Double($1) }
        let hits = try correct.download(rows, as: Int32.self, initial: 0).reduce(0) { $0 + Int($1) }
        return CrossEntropyResult(loss: loss / Double(normalizer), logSumExp: logSumExp, correct: hits,
                                  labels: labelBuffer)
    }

    /// dz = (softmax(z) − onehot(label)) / N for labelled rows, 0 for the others, in bf16 `[T, V]` (the output
    /// head's GEMM input), from the forward's logits and result.
    public func crossEntropyBackward(logits: DeviceTensor, _ forward: CrossEntropyResult, normalizer: Int) throws
        -> DeviceTensor {
        let rows = forward.logSumExp.count
        guard logits.shape.count == 2, logits.shape[0] == rows, logits.precision == .float32, normalizer >= 1 else {
            throw DistFlashError(.shapeMismatch, "cross-entropy backward: logits \(logits.precision) \(logits.shape) "
                + "must be fp32 [T = \(rows), V] and N = \(normalizer) ≥ 1")
        }
        let output = try DeviceTensor(device, shape: logits.shape, precision: .bfloat16)
        if rows > 0 {
            try launch("cross_entropy_backward", grid: rows,
                       [.pointer(logits.address), .pointer(forward.labels.address), .pointer(forward.logSumExp.address),
                        .pointer(output.address), .float(1 / Float(normalizer)), .int(Int32(logits.shape[1]))])
        }
        return output
    }

    // MARK: Embedding

    /// The rows of the table (fp32 `[V, E]`) at the tokens: fp32 `[T, E]`. Tokens outside 0..<V are an error.
    public func embeddingForward(tokens: [Int32], table: DeviceTensor) throws -> DeviceTensor {
        let width = try checkEmbedding(tokens, table)
        let buffer = try DeviceBuffer.upload(device, tokens)
        let output = try DeviceTensor(device, shape: [tokens.count, width], precision: .float32)
        if output.count > 0 {
            try launch("embedding_forward", grid: gridStride(output.count),
                       [.pointer(buffer.address), .pointer(table.address), .pointer(output.address),
                        .int(Int32(width)), .int64(Int64(output.count))])
        }
        return output
    }

    /// tableGrad (fp32 `[V, E]`) += the rows of dy (fp32 `[T, E]`) at the tokens.
    public func embeddingBackward(tokens: [Int32], outputGrad: DeviceTensor, tableGrad: DeviceTensor) throws {
        let width = try checkEmbedding(tokens, tableGrad)
        try require(outputGrad, .float32, [tokens.count, width], "embedding dy")
        guard outputGrad.count > 0 else { return }
        let buffer = try DeviceBuffer.upload(device, tokens)
        try launch("embedding_backward", grid: gridStride(outputGrad.count),
                   [.pointer(buffer.address), .pointer(outputGrad.address), .pointer(tableGrad.address),
                    .int(Int32(width)), .int64(Int64(outputGrad.count))])
    }

    // MARK: Optimizer

    /// The weight decay of each run of a flat parameter buffer, on the device: runs of `elements` elements in
    /// order, each with its decay λ (AdamW decays matrices, not norms), so one launch updates them all.
    public struct DecaySegments: Sendable {
        let ends: DeviceBuffer
        let decays: DeviceBuffer
        public let count: Int
        public let elements: Int

        public init(device: CUDADevice, _ runs: [(elements: Int, decay: Float)]) throws {
            guard !runs.isEmpty, runs.allSatisfy({ $0.elements > 0 }) else {
                throw DistFlashError(.invalidProblem, "decay segments \(runs.map(\.elements)): need at least one, "
                    + "each of ≥ 1 element")
            }
            var end = 0
            let ends = runs.map { run -> Int64 in
                end += run.elements
                return Int64(end)
            }
            (self.ends, decays) = (try .upload(device, ends), try .upload(device, runs.map(\.decay)))
            (count, elements) = (runs.count, end)
        }
    }

    /// One AdamW update (update number `step`, 1-based) of the fp32 master weights θ with gradients
    /// g · `gradientScale` (the clipping factor) and moments m, v (all fp32, one shape), each element decayed by
    /// its segment's λ (`weightDecay` covers every element); refreshes `bf16Copy` (the GEMMs' weights) if given.
    public func adamW(_ theta: DeviceTensor, gradient: DeviceTensor, gradientScale: Float = 1, m: DeviceTensor,
                      v: DeviceTensor, bf16Copy: DeviceTensor?, learningRate: Float, beta1: Float, beta2: Float,
                      epsilon: Float, weightDecay: DecaySegments, step: Int) throws {
        for (tensor, name) in [(gradient, "gradient"), (m, "m"), (v, "v")] {
            try require(tensor, .float32, theta.shape, "AdamW \(name)")
        }
        if let copy = bf16Copy { try require(copy, .bfloat16, theta.shape, "AdamW bf16 copy") }
        guard step >= 1 else { throw DistFlashError(.invalidProblem, "AdamW step \(step): updates count from 1") }
        guard weightDecay.elements == theta.count else {
            throw DistFlashError(.shapeMismatch, "AdamW decay segments cover \(weightDecay.elements) elements, θ has "
                + "\(theta.count)")
        }
        let correction1 = Float(1 - pow(Double(beta1), Double(step)))
        let correction2 = Float(1 - pow(Double(beta2), Double(step)))
        guard theta.count > 0 else { return }
        try launch("adamw_step", grid: gridStride(theta.count),
                   [.pointer(theta.address), .pointer(gradient.address), .pointer(m.address), .pointer(v.address),
                    .pointer(bf16Copy?.address ?? 0), .int64(Int64(theta.count)), .pointer(weightDecay.ends.address),
                    .pointer(weightDecay.decays.address), .int(Int32(weightDecay.count)), .float(gradientScale),
                    .float(learningRate), .float(beta1), .float(beta2), .float(epsilon), .float(correction1),
                    .float(correction2)])
    }

    /// x (fp32) rounded to bf16.
    public func bf16(_ x: DeviceTensor) throws -> DeviceTensor {
        let output = try DeviceTensor(device, shape: x.shape, precision: .bfloat16)
        try bf16(x, into: output)
        return output
    }

    /// output (bf16) = x (fp32) rounded, same shape.
    public func bf16(_ x: DeviceTensor, into output: DeviceTensor) throws {
        try require(x, .float32, x.shape, "cast input")
        try require(output, .bfloat16, x.shape, "cast output")
        if x.count > 0 {
            try launch("cast_bf16", grid: gridStride(x.count),
                       [.pointer(x.address), .pointer(output.address), .int64(Int64(x.count))])
        }
    }

    /// x (fp32 `[rows, width]`, or any shape read as rows of its last axis) rounded into columns of a wider bf16
    /// matrix.
    public func bf16(_ x: DeviceTensor, into slice: ColumnSlice) throws {
        try require(x, .float32, x.shape, "cast input")
        let width = x.shape.last ?? 1, rows = width == 0 ? 0 : x.count / width
        let stride = try slice.stride(rows: rows, width: width)
        if x.count > 0 {
            try launch("cast_bf16_columns", grid: gridStride(x.count),
                       [.pointer(x.address), .pointer(slice.matrix.address), .int(Int32(rows)), .int(Int32(width)),
                        .int(Int32(stride)), .int(Int32(slice.first))])
        }
    }

    /// Σ x² over an fp32 tensor, the block sums added in float64.
    public func sumOfSquares(_ x: DeviceTensor) throws -> Double {
        try require(x, .float32, x.shape, "sum of squares input")
        guard x.count > 0 else { return 0 }
        let blocks = min(gridStride(x.count), 1024)
        let partial = try DeviceBuffer(device, bytes: 4 * blocks)
        try launch("sum_squares", grid: blocks, [.pointer(x.address), .pointer(partial.address), .int64(Int64(x.count))])
        return try partial.download(blocks, as: Float.self, initial: 0).reduce(0.0) { $0 + Double($1) }
    }

    /// Sets every element of an fp32 tensor (or view) to `value`.
    public func fill(_ x: DeviceTensor, with value: Float) throws {
        try require(x, .float32, x.shape, "fill target")
        if x.count > 0 {
            try launch("fill_f32", grid: gridStride(x.count), [.pointer(x.address), .float(value), .int64(Int64(x.count))])
        }
    }

    // MARK: Helpers

    private func launch(_ name: String, grid: Int, _ arguments: [CUDADevice.Argument]) throws {
        let run = {
            try device.exclusive {
                try device.launch(try device.kernel(name, source: Self.source), grid: (grid, 1, 1), block: Self.block,
                                  arguments)
            }
        }
        if let clock { try clock.time("kernel:" + name, run) } else { try run() }
    }

    /// The widest row a warp holds in registers (training_ops.cu: 32 lanes × RMS_WARP_GROUPS × 4).
    private static let warpRowWidth = 2048
    /// The widest row the RMSNorm backward holds in registers (training_ops.cu: rmsnorm_backward_x4_held, BLOCK
    /// threads × 2 groups × 4).
    private static let heldRowWidth = 2048

    /// Whether rows of `width` elements of every operand can be read and written four elements at a time (the
    /// kernels' `_x4` forms: 16-byte fp32 groups).
    private static func fourAtATime(_ width: Int, _ operands: [DeviceTensor]) -> Bool {
        width % 4 == 0 && operands.allSatisfy({ $0.address % 16 == 0 })
    }

    /// Blocks for a grid-stride loop over `count` elements.
    private func gridStride(_ count: Int) -> Int { min((count + Self.block - 1) / Self.block, 65_535) }

    private func require(_ tensor: DeviceTensor, _ precision: DeviceTensor.Precision, _ shape: [Int], _ name: String) throws {
        guard tensor.shape == shape, tensor.precision == precision else {
            throw DistFlashError(.shapeMismatch, "\(name) is \(tensor.precision) \(tensor.shape), expected \(precision) \(shape)")
        }
    }

    private func normRows(_ x: DeviceTensor, _ weight: DeviceTensor) throws -> (rows: Int, width: Int) {
        let width = weight.count
        guard weight.shape.count == 1, x.shape.last == width, x.precision == .float32, weight.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "RMSNorm: x \(x.precision) \(x.shape) and w \(weight.precision) "
                + "\(weight.shape) must be fp32 […, E] and [E]")
        }
        guard width <= Self.maxNormWidth else {
            throw DistFlashError(.invalidProblem, "RMSNorm width E = \(width): the GPU kernel takes E ≤ \(Self.maxNormWidth)")
        }
        return (width == 0 ? 0 : x.count / width, width)
    }

    /// `bf16`: the input may be bf16 (the forward) rather than fp32 only.
    private func rotaryPairs(_ x: DeviceTensor, _ tables: RotaryTables, bf16: Bool) throws -> Int {
        guard x.shape.count == 4, x.shape[1] == tables.tokens, x.shape[3] == tables.headDim,
              x.precision == .float32 || (bf16 && x.precision == .bfloat16) else {
            let types = bf16 ? "fp32 or bf16" : "fp32"
            throw DistFlashError(.shapeMismatch, "rotary input is \(x.precision) \(x.shape), expected \(types) [B, n = "
                + "\(tables.tokens), heads, D = \(tables.headDim)]")
        }
        guard x.count / 2 <= Int(Int32.max) else {
            throw DistFlashError(.invalidProblem, "rotary input \(x.shape): \(x.count / 2) pairs, the kernel takes < 2³¹")
        }
        return x.count / 2
    }


    private func checkCrossEntropy(_ logits: DeviceTensor, _ labels: [Int32], _ normalizer: Int) throws -> Int {
        guard logits.shape.count == 2, logits.shape[0] == labels.count, logits.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "cross-entropy: logits \(logits.precision) \(logits.shape) must be "
                + "fp32 [T = \(labels.count), V]")
        }
        let vocab = logits.shape[1]
        if let bad = labels.firstIndex(where: { $0 < -1 || Int($0) >= vocab }) {
            throw DistFlashError(.invalidProblem, "label \(labels[bad]) at row \(bad) is outside 0..<\(vocab) "
                + "(and is not −1, the no-loss label)")
        }
        guard normalizer >= 1 else {
            throw DistFlashError(.invalidProblem, "loss normalizer N = \(normalizer): must be ≥ 1")
        }
        return vocab
    }

    private func checkEmbedding(_ tokens: [Int32], _ table: DeviceTensor) throws -> Int {
        guard table.shape.count == 2, table.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "embedding table is \(table.precision) \(table.shape), expected fp32 [V, E]")
        }
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= table.shape[0] }) {
            throw DistFlashError(.invalidProblem, "token \(tokens[bad]) at index \(bad) is outside the vocabulary "
                + "0..<\(table.shape[0])")
        }
        return table.shape[1]
    }
}
