extension Layout {
    /// The rows of `tensor` that rank `rank` holds, in local order: `tensor` has the full sequence S on `axis`
    /// (axis 1 for `[B, S, H, D]`, axis 2 for LSE `[B, H, S]`), the result has `count(rank:)` there.
    public func shard(_ tensor: Tensor, rank: Int, axis: Int) throws -> Tensor {
        try requireSequenceAxis(tensor, axis: axis, length: sequence, name: "tensor to shard")
        return tensor.gather(positions(rank: rank), axis: axis)
    }

    /// Rank `rank`'s shard of each full tensor, cut along its role's token axis.
    public func shards(_ tensors: [ShardTensor: Tensor], rank: Int) throws -> [ShardTensor: Tensor] {
        Dictionary(uniqueKeysWithValues: try tensors.map { role, tensor in
            (role, try shard(tensor, rank: rank, axis: role.tokenAxis))
        })
    }

    /// The full tensor of `role` from every rank's tensors (in rank order): the inverse of `shards`.
    public func unshard(_ role: ShardTensor, from ranks: [[ShardTensor: Tensor]]) throws -> Tensor {
        try unshard(try ranks.enumerated().map { rank, tensors in
            guard let tensor = tensors[role] else {
                throw DistFlashError(.runtime, "unshard: rank \(rank) holds no \(role)")
            }
            return tensor
        }, axis: role.tokenAxis)
    }

    /// Puts the P shards (in rank order, each with `count(rank:)` rows on `axis`) back into global order: the
    /// inverse of `shard`.
    public func unshard(_ shards: [Tensor], axis: Int) throws -> Tensor {
        guard shards.count == ranks else {
            throw DistFlashError(.shapeMismatch, "unshard: \(shards.count) shards given, the \(self) needs \(ranks)")
        }
        var shape = shards[0].shape
        guard (0..<shape.count).contains(axis) else {
            throw DistFlashError(.shapeMismatch, "unshard: axis \(axis) outside the shard shape \(shape)")
        }
        shape[axis] = sequence
        var full = Tensor(shape: shape)
        for (rank, shard) in shards.enumerated() {
            try requireSequenceAxis(shard, axis: axis, length: count(rank: rank), name: "shard \(rank)")
            var expected = shape
            expected[axis] = count(rank: rank)
            try shard.requireShape(expected, "shard \(rank)")
            full.scatter(shard, to: positions(rank: rank), axis: axis)
        }
        return full
    }

    /// Position ids of rank `rank`'s tokens (its global positions), so RoPE and next-token labels stay right
    /// whatever the layout.
    public func positionIDs(rank: Int) -> [Int32] {
        positions(rank: rank).map { Int32($0) }
    }

    private func requireSequenceAxis(_ tensor: Tensor, axis: Int, length: Int, name: String) throws {
        guard (0..<tensor.shape.count).contains(axis), tensor.shape[axis] == length else {
            throw DistFlashError(.shapeMismatch,
                                 "\(name) has shape \(tensor.shape): axis \(axis) must hold \(length) tokens (\(self))")
        }
    }
}
