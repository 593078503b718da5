/// Any `AttentionBackend` that computes on host `Tensor`s, seen as a `BlockBackend`: the CPU backend, or a
/// device backend that stages every primitive through host memory.
public struct HostBlocks: BlockBackend {
    public let backend: any AttentionBackend

    public init(_ backend: any AttentionBackend) { self.backend = backend }

    public func filled(_ shape: [Int], with value: Float, like prototype: Tensor?) throws -> Tensor {
        Tensor(shape: shape, repeating: value)
    }

    public func slice(_ block: Tensor, _ ranges: [Range<Int>]) throws -> Tensor { block.block(ranges) }

    public func write(_ values: Tensor, into block: inout Tensor, at ranges: [Range<Int>]) throws {
        block.setBlock(ranges, to: values)
    }

    public func add(_ values: Tensor, into block: inout Tensor, at ranges: [Range<Int>]) throws {
        block.addBlock(ranges, values)
    }

    public func forward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                        mask: AttentionMask, scale: Float, output: inout Tensor, logSumExp: inout Tensor) throws {
        var partial = AttentionPartial(output: output, logSumExp: logSumExp)
        (output, logSumExp) = (Tensor(shape: [0]), Tensor(shape: [0]))  // the backend updates the only copy
        try backend.forward(query: query, queryPositions: queryPositions, key: key, value: value,
                            keyPositions: keyPositions, mask: mask, scale: scale, into: &partial)
        (output, logSumExp) = (partial.output, partial.logSumExp)
    }

    public func merge(output: inout Tensor, logSumExp: inout Tensor, otherOutput: Tensor,
                      otherLogSumExp: Tensor) throws {
        var partial = AttentionPartial(output: output, logSumExp: logSumExp)
        (output, logSumExp) = (Tensor(shape: [0]), Tensor(shape: [0]))
        try backend.merge(&partial, with: AttentionPartial(output: otherOutput, logSumExp: otherLogSumExp))
        (output, logSumExp) = (partial.output, partial.logSumExp)
    }

    public func backwardPreprocess(output: Tensor, outputGrad: Tensor) throws -> Tensor {
        try backend.backwardPreprocess(output: output, outputGrad: outputGrad)
    }

    public func backward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                         mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                         queryGrad: inout Tensor, keyGrad: inout Tensor, valueGrad: inout Tensor) throws {
        var grads = AttentionGradients(query: queryGrad, key: keyGrad, value: valueGrad)
        (queryGrad, keyGrad, valueGrad) = (Tensor(shape: [0]), Tensor(shape: [0]), Tensor(shape: [0]))
        try backend.backward(query: query, queryPositions: queryPositions, key: key, value: value,
                             keyPositions: keyPositions, mask: mask, scale: scale, outputGrad: outputGrad,
                             logSumExp: logSumExp, delta: delta, into: &grads)
        (queryGrad, keyGrad, valueGrad) = (grads.query, grads.key, grads.value)
    }

    public func finish() throws -> Double? { nil }
}
