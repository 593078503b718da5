/// Sizes of one block-pair call — query `[B, S_q, H, D]`, key/value `[B, S_k, H_kv, D]` and one global position
/// per row — checked against each other.
public struct BlockGeometry: Sendable {
    public let batch, queries, keys, heads, kvHeads, dim: Int
    public var group: Int { heads / kvHeads }

    public init(query: Tensor, key: Tensor, value: Tensor, queryPositions: [Int], keyPositions: [Int]) throws {
        guard query.shape.count == 4, key.shape.count == 4 else {
            throw DistFlashError(.shapeMismatch, "Q \(query.shape) and K \(key.shape) must be [B, S, H, D]")
        }
        (batch, queries, heads, dim) = (query.shape[0], query.shape[1], query.shape[2], query.shape[3])
        (keys, kvHeads) = (key.shape[1], key.shape[2])
        try key.requireShape([batch, keys, kvHeads, dim], "K")
        try value.requireShape(key.shape, "V")
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw DistFlashError(.shapeMismatch, "Q has \(heads) heads, K/V \(kvHeads): H must be a multiple of H_kv")
        }
        guard queryPositions.count == queries, keyPositions.count == keys else {
            throw DistFlashError(.shapeMismatch, "\(queryPositions.count) query / \(keyPositions.count) key positions "
                + "for \(queries) query / \(keys) key rows")
        }
    }
}
