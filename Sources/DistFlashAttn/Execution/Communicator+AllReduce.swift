extension Communicator where Payload == Tensor {
    /// Element-wise sum over every rank of `tensors` (same count and shapes on every rank), the same bits on
    /// every rank: rank 0 adds the contributions in rank order and sends the sum back.
    ///
    /// Uses two tags of its own, above any plan's; a rank only sends its next contribution after it received the
    /// previous sum, so consecutive calls never mix.
    public func allReduceSum(_ tensors: [Tensor], rank: Int) throws -> [Tensor] {
        let (gather, scatter) = (Int.max - 1, Int.max - 2)
        guard ranks > 1 else { return tensors }
        let shapes = tensors.map(\.shape)
        if rank != 0 {
            return try exchange(Exchange(sends: [.init(to: 0, tag: gather, payload: tensors)],
                                         receives: [.init(from: 0, tag: scatter, shapes: shapes)]), rank: rank)[0]
        }
        let parts = try exchange(Exchange(receives: (1..<ranks).map { .init(from: $0, tag: gather, shapes: shapes) }),
                                 rank: 0)
        var sum = tensors
        for part in parts {
            for i in sum.indices {
                sum[i].scalars.withUnsafeMutableBufferPointer { total in
                    part[i].scalars.withUnsafeBufferPointer { other in
                        for j in total.indices { total[j] += other[j] }
                    }
                }
            }
        }
        _ = try exchange(Exchange(sends: (1..<ranks).map { .init(to: $0, tag: scatter, payload: sum) }), rank: 0)
        return sum
    }
}
