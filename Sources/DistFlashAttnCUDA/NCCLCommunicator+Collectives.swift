import DistFlashAttn

/// Collectives over every rank's device tensors (fp32 or bf16), for data-parallel work beside the plans' point-to-
/// point steps: gradients summed over the ranks, optimizer state sharded over them (ZeRO-1). Each returns once
/// the result is on the GPU, bounded by the timeout like any wait; every rank must call it, in the same order.
extension NCCLCommunicator {
    /// Sums each tensor element-wise over every rank, in place: the same result on every rank.
    public func allReduceSum(_ tensors: [DeviceTensor], rank: Int) throws {
        try collective("the other ranks' all-reduce of \(tensors.count) tensors", rank: rank, tensors: tensors) { member in
            try grouped {
                for tensor in tensors {
                    try nccl.check(nccl.ncclAllReduce(tensor.address, tensor.address, tensor.count,
                                                      NCCL.type(tensor.precision), NCCL.sum, member.comm, member.stream),
                                   "ncclAllReduce (rank \(rank), \(tensor.count) elements)")
                }
            }
        }
    }

    /// Every rank's `part` `[n]` concatenated in rank order into `whole` `[P·n]` on every rank.
    public func allGather(_ part: DeviceTensor, into whole: DeviceTensor, rank: Int) throws {
        try checkSharded(whole: whole, part: part, "allGather")
        try collective("the other ranks' all-gather", rank: rank, tensors: [part, whole]) { member in
            try nccl.check(nccl.ncclAllGather(part.address, whole.address, part.count, NCCL.type(part.precision),
                                              member.comm, member.stream), "ncclAllGather (rank \(rank))")
        }
    }

    /// The element-wise sum over every rank of `whole` `[P·n]`, of which rank r keeps elements r·n ..< (r+1)·n
    /// in `part` `[n]`.
    public func reduceScatterSum(_ whole: DeviceTensor, into part: DeviceTensor, rank: Int) throws {
        try checkSharded(whole: whole, part: part, "reduceScatterSum")
        try collective("the other ranks' reduce-scatter", rank: rank, tensors: [part, whole]) { member in
            try nccl.check(nccl.ncclReduceScatter(whole.address, part.address, part.count, NCCL.type(part.precision),
                                                  NCCL.sum, member.comm, member.stream), "ncclReduceScatter (rank \(rank))")
        }
    }

    /// NCCL calls between ncclGroupStart and ncclGroupEnd (one launch); the first failing call is the error.
    private func grouped(_ body: () throws -> Void) throws {
        try nccl.check(nccl.ncclGroupStart(), "ncclGroupStart")
        let result = Result { try body() }
        let ended = nccl.ncclGroupEnd()
        try result.get()
        try nccl.check(ended, "ncclGroupEnd")
    }

    private func checkSharded(whole: DeviceTensor, part: DeviceTensor, _ call: String) throws {
        guard whole.precision == part.precision, whole.count == part.count * ranks else {
            throw DistFlashError(.shapeMismatch, "\(call): whole \(whole.shape) (\(whole.precision)) must hold "
                + "\(ranks) × part \(part.shape) (\(part.precision)) elements of the same precision")
        }
    }
}
