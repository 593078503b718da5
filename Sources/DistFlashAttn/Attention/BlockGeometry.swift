/// Sizes of one block-pair call — query `[B, S_q, H, D]`, key/value `[B, S_k, H_kv, D]` and one global position
/// per row — checked against each other.
public struct BlockGeometry: Sendable {
    public let batch, queries, keys, heads, kvHeads, dim: Int
    public var group: Int { heads / kvHeads }

    public init(query: Tensor, key: Tensor, value: Tensor, queryPositions: [Int], keyPositions: [Int]) throws {
        try self.init(queryShape: query.shape, keyShape: key.shape, valueShape: value.shape,
                      queryPositions: queryPositions, keyPositions: keyPositions)
    }

    public init(queryShape: [Int], keyShape: [Int], valueShape: [Int], queryPositions: [Int],
                keyPositions: [Int]) throws {
        guard queryShape.count == 4, keyShape.count == 4 else {
            throw DistFlashError(.shapeMismatch, "Q \(queryShape) and K \(keyShape) must be [B, S, H, D]")
        }
        (batch, queries, heads, dim) = (queryShape[0], queryShape[1], queryShape[2], queryShape[3])
        (keys, kvHeads) = (keyShape[1], keyShape[2])
        guard keyShape == [batch, keys, kvHeads, dim] else {
            throw DistFlashError(.shapeMismatch, "K has shape \(keyShape), expected [\(batch), S_k, H_kv, \(dim)]")
        }
        guard valueShape == keyShape else {
            throw DistFlashError(.shapeMismatch, "V has shape \(valueShape), expected \(keyShape) like K")
        }
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw DistFlashError(.shapeMismatch, "Q has \(heads) heads, K/V \(kvHeads): H must be a multiple of H_kv")
        }
        guard queryPositions.count == queries, keyPositions.count == keys else {
            throw DistFlashError(.shapeMismatch, "\(queryPositions.count) query / \(keyPositions.count) key positions "
                + "for \(queries) query / \(keys) key rows")
        }
    }
}
