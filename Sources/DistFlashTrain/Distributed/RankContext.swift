import DistFlashAttn

/// What one rank of a `SequenceParallelGroup` sees: its index, its tokens' global positions, its attention
/// operator, and the group's all-reduce.
public struct RankContext: Sendable {
    /// This rank's attention; `PlanAttention` also gives the communicator the all-reduce uses.
    private let plan: PlanAttention

    init(attention: PlanAttention) { plan = attention }

    public var rank: Int { plan.rankAttention.rank }
    public var ranks: Int { plan.rankAttention.forwardPlan.ranks }
    /// Global positions of this rank's tokens under the plan's layout `[n]`.
    public var positions: [Int] { plan.rankAttention.positions }
    /// This rank's attention operator: its forward and backward exchange K/V (or Q and partials) with the others.
    public var attention: any AttentionOperator { plan }

    /// Element-wise sum over ranks, the same bits on every rank; every rank must call it with the same shapes.
    public func allReduceSum(_ tensors: [Tensor]) throws -> [Tensor] {
        try plan.rankAttention.communicator.allReduceSum(tensors, rank: rank)
    }

    public func allReduceSum(_ value: Double) throws -> Double {
        // Through fp32 tensors would lose digits: split into a high and a low float.
        let high = Float(value), low = Float(value - Double(high))
        let sum = try allReduceSum([try Tensor(shape: [2], scalars: [high, low])])[0].scalars
        return Double(sum[0]) + Double(sum[1])
    }

    /// This rank's tokens and labels `[B, n]` of a full batch `[B, S]` (labels are shifted before sharding, so
    /// the label of a shard's last token travels with it).
    public func shard(_ batch: TokenBatch) throws -> TokenBatch {
        let problem = plan.rankAttention.problem
        guard batch.sequence == problem.sequence, batch.batch == problem.batch else {
            throw DistFlashError(.shapeMismatch, "batch [B, S] = [\(batch.batch), \(batch.sequence)] but the group "
                + "was built for [\(problem.batch), \(problem.sequence)]")
        }
        return batch.columns(positions)
    }
}
