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
