import DistFlashAttn

/// The CUDA backend for host tensors: the same block primitives as the CPU backend, computed on one GPU by
/// `CUDABlocks`, with each call's tensors moved to the device and back. Q, K, V and dO go to the device as bf16
/// or fp16 (`inputs`; run problems of that dtype for the reference rule to apply); O, LSE, δ and gradients stay
/// fp32.
/// Runs across GPUs keep their tensors on the devices instead (`MultiGPUAttention`).
public struct CUDABackend: AttentionBackend, Sendable {
    public let blocks: CUDABlocks
    public var device: CUDADevice { blocks.device }

    /// `instructions`: the attention kernels' tensor-core instructions (nil: the best for the card).
    public init(device: CUDADevice, inputs: DeviceTensor.Precision = .bfloat16,
                instructions: TensorCoreInstructions? = nil) {
        blocks = CUDABlocks(device: device, inputs: inputs, instructions: instructions)
    }

    /// Whether the kernels run on tensor cores for head dimension `headDim` (D ∈ {64, 128}).
    public func usesTensorCores(headDim: Int) -> Bool { blocks.kernels.usesTensorCores(headDim: headDim) }

    // Threads sharing the device take turns, one whole primitive (copies in, kernels, copies out) at a time.

    public func forward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                        mask: AttentionMask, scale: Float, into partial: inout AttentionPartial) throws {
        partial = try device.exclusive {
            var output = try blocks.upload(partial.output, as: .accumulator)
            var logSumExp = try blocks.upload(partial.logSumExp, as: .accumulator)
            try blocks.forward(query: try blocks.upload(query, as: .input), queryPositions: queryPositions,
                               key: try blocks.upload(key, as: .input), value: try blocks.upload(value, as: .input),
                               keyPositions: keyPositions, mask: mask, scale: scale, output: &output,
                               logSumExp: &logSumExp)
            _ = try blocks.finish()
            return AttentionPartial(output: try output.download(), logSumExp: try logSumExp.download())
        }
    }

    public func merge(_ partial: inout AttentionPartial, with other: AttentionPartial) throws {
        partial = try device.exclusive {
            var output = try blocks.upload(partial.output, as: .accumulator)
            var logSumExp = try blocks.upload(partial.logSumExp, as: .accumulator)
            try blocks.merge(output: &output, logSumExp: &logSumExp,
                             otherOutput: try blocks.upload(other.output, as: .accumulator),
                             otherLogSumExp: try blocks.upload(other.logSumExp, as: .accumulator))
            _ = try blocks.finish()
            return AttentionPartial(output: try output.download(), logSumExp: try logSumExp.download())
        }
    }

    public func backwardPreprocess(output: Tensor, outputGrad: Tensor) throws -> Tensor {
        try outputGrad.requireShape(output.shape, "dO")
        return try device.exclusive {
            let delta = try blocks.backwardPreprocess(output: try blocks.upload(output, as: .accumulator),
                                                      outputGrad: try blocks.upload(outputGrad, as: .input))
            _ = try blocks.finish()
            return try delta.download()
        }
    }

    public func backward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                         mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                         into grads: inout AttentionGradients) throws {
        grads = try device.exclusive {
            var dq = try blocks.upload(grads.query, as: .accumulator)
            var dk = try blocks.upload(grads.key, as: .accumulator), dv = try blocks.upload(grads.value, as: .accumulator)
            try blocks.backward(query: try blocks.upload(query, as: .input), queryPositions: queryPositions,
                                key: try blocks.upload(key, as: .input), value: try blocks.upload(value, as: .input),
                                keyPositions: keyPositions, mask: mask, scale: scale,
                                outputGrad: try blocks.upload(outputGrad, as: .input),
                                logSumExp: try blocks.upload(logSumExp, as: .accumulator),
                                delta: try blocks.upload(delta, as: .accumulator),
                                queryGrad: &dq, keyGrad: &dk, valueGrad: &dv)
            _ = try blocks.finish()
            return AttentionGradients(query: try dq.download(), key: try dk.download(), value: try dv.download())
        }
    }
}
