extension Communicator {
    /// Element-wise sum over every rank of `tensors` (same count and shapes on every rank), the same bits on
    /// every rank: rank 0 adds the contributions in rank order and sends the sum back.
    ///
    /// Uses two tags of its own, above any plan's; a rank only sends its next contribution after it received the
    /// previous sum, so consecutive calls never mix.
    public func allReduceSum(_ tensors: [Tensor], rank: Int) throws -> [Tensor] {
        let (gather, scatter) = (Int.max - 1, Int.max - 2)
        guard ranks > 1 else { return tensors }
        if rank != 0 {
            try send(tensors, from: rank, to: 0, tag: gather)
            return try receive(from: 0, to: rank, tag: scatter)
        }
        var sum = tensors
        for peer in 1..<ranks {
            let part = try receive(from: peer, to: 0, tag: gather)
            guard part.map(\.shape) == sum.map(\.shape) else {
                throw DistFlashError(.shapeMismatch, "all-reduce: rank \(peer) sent shapes \(part.map(\.shape)), "
                    + "rank 0 holds \(sum.map(\.shape)); every rank must reduce the same tensors")
            }
            for i in sum.indices {
                sum[i].scalars.withUnsafeMutableBufferPointer { total in
                    part[i].scalars.withUnsafeBufferPointer { other in
                        for j in total.indices { total[j] += other[j] }
                    }
                }
            }
        }
        for peer in 1..<ranks { try send(sum, from: 0, to: peer, tag: scatter) }
        return sum
    }
}
