import DistFlashAttn
import Foundation

/// The block primitives on one GPU with every tensor resident on it (`DeviceTensor`): what the executor runs a
/// plan with across GPUs. Inputs (Q, K, V, dO) are bf16 or fp16 (`inputs`), accumulators (O, LSE, δ, gradients)
/// fp32. Work is queued
/// on the device's compute stream and not waited for; `finish` waits and returns the seconds the GPU spent in
/// the primitives (timed with events).
///
/// Position and document arrays and the tile bounds computed from them are cached per distinct block, since a
/// plan reuses the same few blocks at every step.
public final class CUDABlocks: BlockBackend, @unchecked Sendable {
    // Invariant: `tokens` is touched only while holding `lock`.
    public let device: CUDADevice
    let kernels: AttentionKernels
    private let lock = NSLock()
    private var tokens: [TokenKey: AttentionKernels.TokenBuffers] = [:]
    /// Times each primitive (read and emptied by `finish`); nil when nobody reads the times.
    private let clock: PhaseClock?

    static let ops = KernelSource.splicing(PackageResources.tensor_ops_cu)
    /// The tensor ops for this backend's input type.
    let opsSource: String
    private let warps = 4
    /// The type of Q, K, V and dO: bf16 or fp16.
    public let inputs: DeviceTensor.Precision

    /// `inputs`: bf16 or fp16 (an fp32 input type is refused when used). `timing`: whether each primitive is timed
    /// with a pair of CUDA events, which `finish` reads; long-lived users that never call `finish` (a training
    /// model's tensor ops) turn it off, or the events would pile up. `instructions`: the attention kernels' tensor-core
    /// instructions (nil: the best for the card).
    public init(device: CUDADevice, timing: Bool = true, inputs: DeviceTensor.Precision = .bfloat16,
                instructions: TensorCoreInstructions? = nil) {
        (self.device, self.inputs) = (device, inputs)
        clock = timing ? PhaseClock(device: device) : nil
        kernels = AttentionKernels(device: device, inputs: inputs, instructions: instructions)
        opsSource = KernelSource.forInputs(Self.ops, inputs)
    }

    /// Whether the kernels run on tensor cores for head dimension `headDim` (D ∈ {64, 128}; P, dS and dO then
    /// enter the mma in the input type, which the reference rule's baseline must mirror). `DISTFLASH_CUDA_KERNEL=simt`
    /// forces the SIMT kernels.
    public static func usesTensorCores(headDim: Int) -> Bool { AttentionKernels.usesTensorCores(headDim: headDim) }

    /// The attention kernels' tensor-core instructions on this card.
    public var instructions: TensorCoreInstructions { kernels.instructions }

    /// Places a host tensor on this GPU: Q, K, V, dO as `.input` (`inputs`), O and LSE as `.accumulator` (fp32).
    public func upload(_ tensor: Tensor, as precision: BlockPrecision) throws -> DeviceTensor {
        try DeviceTensor.upload(tensor, to: device, as: precision == .input ? inputs : .float32)
    }

    /// Places a rank's shards on this GPU, each in its role's precision.
    public func place(_ shards: [ShardTensor: Tensor]) throws -> [ShardTensor: DeviceTensor] {
        try shards.reduce(into: [:]) { placed, shard in placed[shard.key] = try upload(shard.value, as: shard.key.precision) }
    }

    /// An input-type tensor of unit-variance random values made on the device (benchmark inputs), different per
    /// `seed`.
    public func random(_ shape: [Int], seed: UInt32) throws -> DeviceTensor {
        let tensor = try DeviceTensor(device, shape: shape, precision: inputs)
        if tensor.count > 0 {
            try device.launch(try device.kernel("fill_random_input", source: opsSource),
                              grid: (min((tensor.count + 255) / 256, 65_535), 1, 1), block: 256,
                              [.pointer(tensor.address), .int64(Int64(tensor.count)), .int(Int32(bitPattern: seed))])
        }
        return tensor
    }

    // MARK: Tensor operations

    public func filled(_ shape: [Int], with value: Float, like prototype: DeviceTensor?) throws -> DeviceTensor {
        let tensor = try DeviceTensor(device, shape: shape, precision: prototype?.precision ?? .float32)
        if tensor.count > 0 {
            switch tensor.precision {
            case .float32: try tensor.buffer.fill32(value.bitPattern, count: tensor.count)  // a fresh tensor: offset 0
            case .bfloat16: try tensor.buffer.fill16(BFloat16.bits(value), count: tensor.count)
            case .float16: try tensor.buffer.fill16(Float16(value).bitPattern, count: tensor.count)
            }
        }
        return tensor
    }

    public func slice(_ block: DeviceTensor, _ ranges: [Range<Int>]) throws -> DeviceTensor {
        let out = try DeviceTensor(device, shape: ranges.map(\.count), precision: block.precision)
        try copy(from: block, at: ranges, to: out, at: out.shape.map { 0..<$0 }, add: false)
        return out
    }

    public func write(_ values: DeviceTensor, into block: inout DeviceTensor, at ranges: [Range<Int>]) throws {
        try copy(from: values, at: values.shape.map { 0..<$0 }, to: block, at: ranges, add: false)
    }

    public func add(_ values: DeviceTensor, into block: inout DeviceTensor, at ranges: [Range<Int>]) throws {
        guard block.precision == .float32 else {
            throw DistFlashError(.runtime, "adding into a \(block.precision) tensor \(block.shape): only fp32 accumulators add")
        }
        try copy(from: values, at: values.shape.map { 0..<$0 }, to: block, at: ranges, add: true)
    }

    /// `target[targetRanges] (=|+=) source[sourceRanges]`, tensors of up to 4 axes (padded in front to 4).
    private func copy(from source: DeviceTensor, at sourceRanges: [Range<Int>], to target: DeviceTensor,
                      at targetRanges: [Range<Int>], add: Bool) throws {
        let extent = sourceRanges.map(\.count)
        guard extent == targetRanges.map(\.count), source.precision == target.precision, extent.count <= 4,
              zip(sourceRanges, source.shape).allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= $1 }),
              zip(targetRanges, target.shape).allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= $1 }) else {
            throw DistFlashError(.shapeMismatch, "block copy \(sourceRanges) of \(source.shape) to \(targetRanges) "
                + "of \(target.shape): extents, precisions or bounds disagree")
        }
        let runs = extent.dropLast().reduce(1, *)
        guard runs > 0, let last = extent.last, last > 0 else { return }
        func padded(_ values: [Int], _ fill: Int) -> [Int] { Array(repeating: fill, count: 4 - values.count) + values }
        let (e, o, p) = (padded(extent, 1), padded(sourceRanges.map(\.lowerBound), 0), padded(targetRanges.map(\.lowerBound), 0))
        let (s, t) = (padded(source.shape, 1), padded(target.shape, 1))
        let name = source.precision != .float32 ? "copy_block_b16" : add ? "add_block_f32" : "copy_block_f32"
        try timed {
            try device.launch(try device.kernel(name, source: opsSource), grid: (min(runs, 65_535), 1, 1),
                              block: last >= 128 ? 128 : 32,
                              [.pointer(source.address), .pointer(target.address)]
                                  + (e + s.dropFirst() + o + t.dropFirst() + p).map { .int(Int32($0)) })
        }
    }

    // MARK: Attention primitives

    public func forward(query: DeviceTensor, queryPositions: [Int], key: DeviceTensor, value: DeviceTensor,
                        keyPositions: [Int], mask: AttentionMask, scale: Float, output: inout DeviceTensor,
                        logSumExp: inout DeviceTensor) throws {
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        try require(output, .float32, query.shape, "partial O")
        try require(logSumExp, .float32, [g.batch, g.heads, g.queries], "partial LSE")
        if g.queries == 0 || g.keys == 0 { return }
        let tokens = try tokenBuffers(mask, queryPositions, keyPositions)
        let launch = try tokens.forward(kernels, queries: g.queries, keys: g.keys, heads: g.heads, batch: g.batch, dim: g.dim)
        try timed {
            try launch.run(device, try launch.inputArguments(query: query, key: key, value: value)
                + tokens.arguments + launch.extraArguments
                + [.pointer(output.address), .pointer(logSumExp.address), .int(Int32(g.queries)), .int(Int32(g.keys)),
                   .int(Int32(g.heads)), .int(Int32(g.kvHeads)), .int(Int32(g.dim)), .float(scale)]
                + kernels.maskArguments(mask))
        }
    }

    /// The attention of `query` over `key`, `value` as one whole block (the keys are all there are: no partial to
    /// fold into): O in the input type `[B, S_q, H, D]` — rounded once, what a training step's output projection
    /// and backward read — and LSE fp32 `[B, H, S_q]`. On wgmma cards one kernel writes both, with no fill before
    /// and no fp32 O; elsewhere the fp32 partial is formed, then rounded.
    public func wholeForward(query: DeviceTensor, queryPositions: [Int], key: DeviceTensor, value: DeviceTensor,
                             keyPositions: [Int], mask: AttentionMask, scale: Float) throws
        -> (output: DeviceTensor, logSumExp: DeviceTensor) {
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        let tokens = try tokenBuffers(mask, queryPositions, keyPositions)
        let launch = try tokens.forward(kernels, queries: g.queries, keys: g.keys, heads: g.heads, batch: g.batch, dim: g.dim)
        guard launch.wholeKernel != nil, g.queries > 0, g.keys > 0 else {
            var output = try filled(query.shape, with: 0, like: nil)
            var logSumExp = try filled([g.batch, g.heads, g.queries], with: -.infinity, like: nil)
            try forward(query: query, queryPositions: queryPositions, key: key, value: value, keyPositions: keyPositions,
                        mask: mask, scale: scale, output: &output, logSumExp: &logSumExp)
            return (try narrowed(output), logSumExp)
        }
        let output = try DeviceTensor(device, shape: query.shape, precision: inputs)
        let logSumExp = try DeviceTensor(device, shape: [g.batch, g.heads, g.queries], precision: .float32)
        try timed {
            try launch.run(device, try launch.inputArguments(query: query, key: key, value: value)
                + tokens.arguments + launch.extraArguments
                + [.pointer(output.address), .pointer(logSumExp.address), .int(Int32(g.queries)), .int(Int32(g.keys)),
                   .int(Int32(g.heads)), .int(Int32(g.kvHeads)), .int(Int32(g.dim)), .float(scale)]
                + kernels.maskArguments(mask), whole: true)
        }
        return (output, logSumExp)
    }

    public func merge(output: inout DeviceTensor, logSumExp: inout DeviceTensor, otherOutput: DeviceTensor,
                      otherLogSumExp: DeviceTensor) throws {
        try require(otherOutput, .float32, output.shape, "merged O")
        try require(otherLogSumExp, .float32, logSumExp.shape, "merged LSE")
        let (batch, sequence, heads, dim) = (output.shape[0], output.shape[1], output.shape[2], output.shape[3])
        guard sequence > 0 else { return }
        try timed {
            try device.launch(try device.kernel("merge_partials", source: opsSource),
                              grid: ((sequence + warps - 1) / warps, heads, batch), block: 32 * warps,
                              [.pointer(output.address), .pointer(logSumExp.address), .pointer(otherOutput.address),
                               .pointer(otherLogSumExp.address), .int(Int32(sequence)), .int(Int32(heads)),
                               .int(Int32(dim))])
        }
    }

    /// δ = rowsum(dO ∘ O) `[B, H, S]` for O `[B, S, H, D]` fp32 (a merged partial) or in the input type (O as a
    /// training step keeps it), dO in the input type.
    public func backwardPreprocess(output: DeviceTensor, outputGrad: DeviceTensor) throws -> DeviceTensor {
        try require(output, output.precision == inputs ? inputs : .float32, outputGrad.shape, "O")
        try require(outputGrad, inputs, output.shape, "dO")
        let (batch, sequence, heads, dim) = (output.shape[0], output.shape[1], output.shape[2], output.shape[3])
        let delta = try DeviceTensor(device, shape: [batch, heads, sequence], precision: .float32)
        if sequence > 0 {
            try timed {
                let name = output.precision == inputs ? "backward_preprocess_inputs" : "backward_preprocess_input"
                try device.launch(try device.kernel(name, source: opsSource),
                                  grid: ((sequence + warps - 1) / warps, heads, batch), block: 32 * warps,
                                  [.pointer(output.address), .pointer(outputGrad.address), .pointer(delta.address),
                                   .int(Int32(sequence)), .int(Int32(heads)), .int(Int32(dim))])
            }
        }
        return delta
    }

    public func backward(query: DeviceTensor, queryPositions: [Int], key: DeviceTensor, value: DeviceTensor,
                         keyPositions: [Int], mask: AttentionMask, scale: Float, outputGrad: DeviceTensor,
                         logSumExp: DeviceTensor, delta: DeviceTensor, queryGrad: inout DeviceTensor,
                         keyGrad: inout DeviceTensor, valueGrad: inout DeviceTensor) throws {
        try require(queryGrad, .float32, query.shape, "dQ")
        try backward(query: query, queryPositions: queryPositions, key: key, value: value, keyPositions: keyPositions,
                     mask: mask, scale: scale, outputGrad: outputGrad, logSumExp: logSumExp, delta: delta,
                     queryGrad: .add(queryGrad.address), keyGrad: keyGrad, valueGrad: valueGrad)
    }

    /// The backward with dQ's destination as `AttentionKernels.runBackward` takes it (an fp32 dQ of Q's shape
    /// added into or written, checked by the caller; or its rotation into a wider bf16 matrix).
    private func backward(query: DeviceTensor, queryPositions: [Int], key: DeviceTensor, value: DeviceTensor,
                          keyPositions: [Int], mask: AttentionMask, scale: Float, outputGrad: DeviceTensor,
                          logSumExp: DeviceTensor, delta: DeviceTensor, queryGrad: AttentionKernels.QueryGradOutput,
                          keyGrad: DeviceTensor, valueGrad: DeviceTensor) throws {
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        try require(outputGrad, inputs, query.shape, "dO")
        try require(logSumExp, .float32, [g.batch, g.heads, g.queries], "LSE")
        try require(delta, .float32, [g.batch, g.heads, g.queries], "δ")
        try require(keyGrad, .float32, key.shape, "dK")
        try require(valueGrad, .float32, key.shape, "dV")
        if g.queries == 0 || g.keys == 0 { return }
        let tokens = try tokenBuffers(mask, queryPositions, keyPositions)
        let tensorCores = kernels.usesTensorCores(headDim: g.dim)
        // The tensor-core kernel takes dO in the input type (an mma operand), the SIMT kernels as fp32.
        let dO = tensorCores ? outputGrad : try widened(outputGrad)
        let launch = tensorCores ? try tokens.backward(kernels, queries: g.queries, keys: g.keys, heads: g.heads,
                                                       kvHeads: g.kvHeads, batch: g.batch, dim: g.dim) : nil
        let operands = try launch?.inputArguments(query: query, key: key, value: value, outputGrad: dO)
            ?? [query, key, value, dO].map { .pointer($0.address) }
        let inputs = operands + [.pointer(logSumExp.address), .pointer(delta.address)] + tokens.arguments
        let sizes: [CUDADevice.Argument] = [.int(Int32(g.queries)), .int(Int32(g.keys)), .int(Int32(g.heads)),
                                            .int(Int32(g.kvHeads)), .int(Int32(g.dim)), .float(scale)]
            + kernels.maskArguments(mask)
        try timed {
            try kernels.runBackward(launch, queries: g.queries, keys: g.keys, heads: g.heads, kvHeads: g.kvHeads,
                                    batch: g.batch, inputs: inputs, queryGrad: queryGrad,
                                    gradients: (keyGrad.address, valueGrad.address), sizes: sizes)
        }
        withExtendedLifetime(dO) {}
    }

    /// dQ, dK, dV (fp32, the shapes of Q and K) of a whole-block attention (`wholeForward`'s keys, O in the input
    /// type or fp32): δ, then the backward — on wgmma cards writing dQ from its tiles, so dQ is never filled.
    public func wholeBackward(query: DeviceTensor, queryPositions: [Int], key: DeviceTensor, value: DeviceTensor,
                              keyPositions: [Int], mask: AttentionMask, scale: Float, output: DeviceTensor,
                              outputGrad: DeviceTensor, logSumExp: DeviceTensor) throws
        -> (query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) {
        let delta = try backwardPreprocess(output: output, outputGrad: outputGrad)
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        let tokens = try tokenBuffers(mask, queryPositions, keyPositions)
        var sets = false
        if g.queries > 0, g.keys > 0, kernels.usesTensorCores(headDim: g.dim) {
            sets = try tokens.backward(kernels, queries: g.queries, keys: g.keys, heads: g.heads, kvHeads: g.kvHeads,
                                       batch: g.batch, dim: g.dim).setsQueryGrad
        }
        let dq = sets ? try DeviceTensor(device, shape: query.shape, precision: .float32)
            : try filled(query.shape, with: 0, like: nil)
        let (dk, dv) = (try filled(key.shape, with: 0, like: nil), try filled(key.shape, with: 0, like: nil))
        try backward(query: query, queryPositions: queryPositions, key: key, value: value, keyPositions: keyPositions,
                     mask: mask, scale: scale, outputGrad: outputGrad, logSumExp: logSumExp, delta: delta,
                     queryGrad: sets ? .set(dq.address) : .add(dq.address), keyGrad: dk, valueGrad: dv)
        return (dq, dk, dv)
    }

    /// `wholeBackward` fused with RoPE's backward on dQ, for a training step on wgmma cards: dQ rotated back by the
    /// query rows' angles (`rope`, its tokens = the query rows) and rounded to bf16 into `slice` (row b·S + i, the
    /// heads' columns from `slice.first` on), where the projections' GEMM reads it; dK and dV (fp32) returned.
    /// Throws where the backward does not run on wgmma (`wgmmaBackward(headDim:)` says which).
    public func wholeBackward(query: DeviceTensor, positions: [Int], key: DeviceTensor, value: DeviceTensor,
                              mask: AttentionMask, scale: Float, output: DeviceTensor, outputGrad: DeviceTensor,
                              logSumExp: DeviceTensor, rotatingQueryGradBy rope: TrainingKernels.RotaryTables,
                              into slice: TrainingKernels.ColumnSlice) throws -> (key: DeviceTensor, value: DeviceTensor) {
        let delta = try backwardPreprocess(output: output, outputGrad: outputGrad)
        let g = try geometry(query, key, value, positions, positions)
        guard rope.tokens == g.queries, rope.headDim == g.dim else {
            throw DistFlashError(.shapeMismatch, "rotary tables of \(rope.tokens) tokens and D = \(rope.headDim) for "
                + "dQ of \(g.queries) query rows and D = \(g.dim)")
        }
        let stride = try slice.stride(rows: g.batch * g.queries, width: g.heads * g.dim)
        let (dk, dv) = (try filled(key.shape, with: 0, like: nil), try filled(key.shape, with: 0, like: nil))
        try backward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                     mask: mask, scale: scale, outputGrad: outputGrad, logSumExp: logSumExp, delta: delta,
                     queryGrad: .rotated(.init(output: slice.matrix.address, cosines: rope.cosines.address,
                                               sines: rope.sines.address, stride: stride, column: slice.first)),
                     keyGrad: dk, valueGrad: dv)
        return (dk, dv)
    }

    /// Whether this device's backward at head dimension `dim` runs on wgmma (and so can rotate dQ into a slice).
    public func wgmmaBackward(headDim dim: Int) -> Bool {
        kernels.instructions == .wgmma && kernels.usesTensorCores(headDim: dim)
    }

    public func finish() throws -> Double? {
        try device.synchronize()
        return try clock?.collect()["primitives"] ?? 0
    }

    // MARK: Helpers

    /// Queues `work` inside the "primitives" phase of `clock` (a primitive that fails leaves no timing behind).
    private func timed(_ work: () throws -> Void) throws {
        guard let clock else { return try work() }
        try clock.time("primitives", work)
    }

    /// An fp32 copy of a tensor in this backend's input type (exact).
    public func widened(_ tensor: DeviceTensor) throws -> DeviceTensor {
        try require(tensor, inputs, tensor.shape, "the tensor to widen")
        let out = try DeviceTensor(device, shape: tensor.shape, precision: .float32)
        guard tensor.count > 0 else { return out }
        try device.launch(try device.kernel("widen_input", source: opsSource),
                          grid: (min((tensor.count + 255) / 256, 65_535), 1, 1), block: 256,
                          [.pointer(tensor.address), .pointer(out.address), .int64(Int64(tensor.count))])
        return out
    }

    /// An fp32 tensor rounded to this backend's input type (to nearest, ties to even).
    public func narrowed(_ tensor: DeviceTensor) throws -> DeviceTensor {
        try require(tensor, .float32, tensor.shape, "the tensor to narrow")
        let out = try DeviceTensor(device, shape: tensor.shape, precision: inputs)
        guard tensor.count > 0 else { return out }
        try device.launch(try device.kernel("narrow_input", source: opsSource),
                          grid: (min((tensor.count + 255) / 256, 65_535), 1, 1), block: 256,
                          [.pointer(tensor.address), .pointer(out.address), .int64(Int64(tensor.count))])
        return out
    }

    private struct TokenKey: Hashable {
        let queries: [Int], keys: [Int], documents: [Int]?
    }

    private func tokenBuffers(_ mask: AttentionMask, _ queries: [Int], _ keys: [Int]) throws
        -> AttentionKernels.TokenBuffers {
        let key = TokenKey(queries: queries, keys: keys, documents: mask.documentLengths)
        if let cached = lock.withLock({ tokens[key] }) { return cached }
        let buffers = try AttentionKernels.TokenBuffers(device, mask, queries, keys)
        lock.withLock {
            if tokens.count >= 64 { tokens.removeAll() }  // a plan uses a handful; bound it for long-lived callers
            tokens[key] = buffers
        }
        return buffers
    }

    private func require(_ tensor: DeviceTensor, _ precision: DeviceTensor.Precision, _ shape: [Int],
                         _ name: String) throws {
        guard tensor.shape == shape, tensor.precision == precision else {
            throw DistFlashError(.shapeMismatch, "\(name) is \(tensor.precision) \(tensor.shape), expected "
                + "\(precision) \(shape)")
        }
    }

    /// The shared shape checks, inputs of this backend's type, and its limit on D.
    private func geometry(_ query: DeviceTensor, _ key: DeviceTensor, _ value: DeviceTensor, _ queryPositions: [Int],
                          _ keyPositions: [Int]) throws -> BlockGeometry {
        guard inputs != .float32 else {
            throw DistFlashError(.shapeMismatch, "inputs of type \(inputs): the CUDA kernels take bf16 or fp16 inputs")
        }
        for (tensor, name) in [(query, "Q"), (key, "K"), (value, "V")] where tensor.precision != inputs {
            throw DistFlashError(.shapeMismatch, "\(name) is \(tensor.precision): this backend's kernels take \(inputs)")
        }
        let g = try BlockGeometry(queryShape: query.shape, keyShape: key.shape, valueShape: value.shape,
                                  queryPositions: queryPositions, keyPositions: keyPositions)
        guard g.dim <= 256 else {
            throw DistFlashError(.shapeMismatch, "head dim D = \(g.dim): the CUDA kernels support D ≤ 256")
        }
        return g
    }
}
