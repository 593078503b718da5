import DistFlashAttn
import DistFlashAttnCUDA
import Synchronization

/// The attention as the GPU model sees it (the device counterpart of `AttentionOperator`): this rank's shard in,
/// its result out, whatever brings the other ranks' keys. Shapes: Q `[B, n, H, D]` and K, V `[B, n, H_kv, D]` in
/// bf16 at the shard's global `positions`; O `[B, n, H, D]` bf16 (rounded once, what the output projection and the
/// backward read) and LSE `[B, H, n]` fp32; dO bf16; dQ, dK, dV fp32.
public protocol DeviceAttention: Sendable {
    func forward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int]) throws
        -> (output: DeviceTensor, logSumExp: DeviceTensor)
    func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int], output: DeviceTensor,
                  logSumExp: DeviceTensor, outputGrad: DeviceTensor) throws
        -> (query: DeviceTensor, key: DeviceTensor, value: DeviceTensor)
    /// `backward` with RoPE's backward on dQ fused in where the attention can (dQ rotated back by `rope` and
    /// rounded to bf16 into `slice`, row b·n + t, the heads' columns from `slice.first` on): dK and dV, or nil where
    /// it cannot (the caller then rotates `backward`'s dQ itself).
    func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int], output: DeviceTensor,
                  logSumExp: DeviceTensor, outputGrad: DeviceTensor, rotatingQueryGradBy rope: TrainingKernels.RotaryTables,
                  into slice: TrainingKernels.ColumnSlice) throws -> (key: DeviceTensor, value: DeviceTensor)?
    /// Number of `forward` calls so far (the checkpointing strategies differ in it).
    var forwardCalls: Int { get }
}

extension DeviceAttention {
    public func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int],
                         output: DeviceTensor, logSumExp: DeviceTensor, outputGrad: DeviceTensor,
                         rotatingQueryGradBy rope: TrainingKernels.RotaryTables,
                         into slice: TrainingKernels.ColumnSlice) throws -> (key: DeviceTensor, value: DeviceTensor)? {
        nil
    }
}

/// Attention on one GPU over a shard holding the whole sequence: one query block against the same tokens as keys,
/// through the backend's block primitives; scale 1/√D.
public final class SingleGPUAttention: DeviceAttention {
    public let blocks: CUDABlocks
    public let mask: AttentionMask
    private let calls = Atomic<Int>(0)

    public init(blocks: CUDABlocks, mask: AttentionMask = .causal) { (self.blocks, self.mask) = (blocks, mask) }

    public var forwardCalls: Int { calls.load(ordering: .relaxed) }

    public func forward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int]) throws
        -> (output: DeviceTensor, logSumExp: DeviceTensor) {
        calls.add(1, ordering: .relaxed)
        return try blocks.wholeForward(query: query, queryPositions: positions, key: key, value: value,
                                       keyPositions: positions, mask: mask, scale: 1 / Float(query.shape[3]).squareRoot())
    }

    public func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int],
                         output: DeviceTensor, logSumExp: DeviceTensor, outputGrad: DeviceTensor) throws
        -> (query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) {
        try blocks.wholeBackward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                                 mask: mask, scale: 1 / Float(query.shape[3]).squareRoot(), output: output,
                                 outputGrad: outputGrad, logSumExp: logSumExp)
    }

    /// On wgmma cards: the backward writes dQ rotated back into `slice` (no fp32 dQ; CUDABlocks.wholeBackward).
    public func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int],
                         output: DeviceTensor, logSumExp: DeviceTensor, outputGrad: DeviceTensor,
                         rotatingQueryGradBy rope: TrainingKernels.RotaryTables,
                         into slice: TrainingKernels.ColumnSlice) throws -> (key: DeviceTensor, value: DeviceTensor)? {
        guard blocks.wgmmaBackward(headDim: query.shape[3]) else { return nil }
        return try blocks.wholeBackward(query: query, positions: positions, key: key, value: value, mask: mask,
                                        scale: 1 / Float(query.shape[3]).squareRoot(), output: output,
                                        outputGrad: outputGrad, logSumExp: logSumExp, rotatingQueryGradBy: rope,
                                        into: slice)
    }
}
