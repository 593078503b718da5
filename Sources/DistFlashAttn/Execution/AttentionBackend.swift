/// The block primitives a backend provides to the executor. Shapes use fixed letters: B batch, S_q / S_k rows of
/// the query / key block, H query heads, H_kv key/value heads, D head dimension.
public protocol AttentionBackend: Sendable {
    /// Folds the block (query `[B, S_q, H, D]` at `queryPositions`) × (key, value `[B, S_k, H_kv, D]` at
    /// `keyPositions`) into `partial` (O `[B, S_q, H, D]`, LSE `[B, H, S_q]`).
    func forward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                 mask: AttentionMask, scale: Float, into partial: inout AttentionPartial) throws

    /// `partial ⊕= other` for the same query rows and disjoint key sets.
    func merge(_ partial: inout AttentionPartial, with other: AttentionPartial) throws

    /// δ = rowsum(dO ∘ O): output, outputGrad `[B, S, H, D]` → `[B, H, S]`.
    func backwardPreprocess(output: Tensor, outputGrad: Tensor) throws -> Tensor

    /// Adds the block's dQ `[B, S_q, H, D]` and dK, dV `[B, S_k, H_kv, D]` into `grads`, given the final LSE and δ.
    func backward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                  mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                  into grads: inout AttentionGradients) throws
}

extension AttentionBackend {
    /// Attention over the whole sequence on one device: the forward primitive on one block holding every token.
    public func attention(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor) throws
        -> AttentionPartial {
        try query.requireShape(problem.queryShape, "Q")
        try key.requireShape(problem.keyValueShape, "K")
        try value.requireShape(problem.keyValueShape, "V")
        let positions = Array(0..<problem.sequence)
        var result = AttentionPartial.empty(batch: problem.batch, sequence: problem.sequence, heads: problem.heads,
                                            headDim: problem.headDim)
        try forward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                    mask: problem.mask, scale: problem.scale, into: &result)
        return result
    }

    /// Gradients of attention over the whole sequence on one device.
    public func attentionBackward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                                  result: AttentionPartial, outputGrad: Tensor) throws -> AttentionGradients {
        try outputGrad.requireShape(problem.queryShape, "dO")
        let positions = Array(0..<problem.sequence)
        let delta = try backwardPreprocess(output: result.output, outputGrad: outputGrad)
        var grads = AttentionGradients.zeros(queryShape: problem.queryShape, keyValueShape: problem.keyValueShape)
        try backward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                     mask: problem.mask, scale: problem.scale, outputGrad: outputGrad,
                     logSumExp: result.logSumExp, delta: delta, into: &grads)
        return grads
    }
}
