import DistFlashAttn

/// Self-attention as the model sees it: this rank's shard of n tokens in, this rank's result out. How the other
/// ranks' keys and values reach it (one device, a ring, a plan) is the operator's business; the model only
/// passes the shard's tensors and the global position of each of its tokens.
///
/// Shapes: query `[B, n, H, D]`, key and value `[B, n, H_kv, D]`, positions `[n]` (global, not necessarily
/// contiguous or sorted), O `[B, n, H, D]`, LSE `[B, H, n]`.
///
/// Under data-parallel sharding every rank calls `forward` (then `backward`) for the same layer from its own
/// thread; an implementation may block until its peers arrive.
public protocol AttentionOperator: Sendable {
    /// O and LSE of the shard's queries over every key of the sequence the mask lets them see.
    func forward(query: Tensor, key: Tensor, value: Tensor, positions: [Int]) throws -> AttentionPartial

    /// dQ of the shard's queries and dK, dV of the shard's keys and values (summed over every query, on any rank,
    /// that saw them), given the forward's `result` and dO `[B, n, H, D]`.
    func backward(query: Tensor, key: Tensor, value: Tensor, positions: [Int], result: AttentionPartial,
                  outputGrad: Tensor) throws -> AttentionGradients

    /// Number of `forward` calls so far (checkpointing strategies differ in how often they recompute it).
    var forwardCalls: Int { get }
}
