import DistFlashAttn
import Synchronization

/// The attention operator of one rank of a `SequenceParallelGroup`: the plan's forward and backward over the
/// group's communicator. The model passes this rank's shard, whose positions must be the plan's.
final class PlanAttention: AttentionOperator {
    let rankAttention: RankAttention
    private let calls = Atomic<Int>(0)

    init(_ rankAttention: RankAttention) { self.rankAttention = rankAttention }

    var forwardCalls: Int { calls.load(ordering: .relaxed) }

    func forward(query: Tensor, key: Tensor, value: Tensor, positions: [Int]) throws -> AttentionPartial {
        try requirePlanPositions(positions)
        calls.add(1, ordering: .relaxed)
        return try rankAttention.forward(query: query, key: key, value: value)
    }

    func backward(query: Tensor, key: Tensor, value: Tensor, positions: [Int], result: AttentionPartial,
                  outputGrad: Tensor) throws -> AttentionGradients {
        try requirePlanPositions(positions)
        return try rankAttention.backward(query: query, key: key, value: value, result: result, outputGrad: outputGrad)
    }

    private func requirePlanPositions(_ positions: [Int]) throws {
        guard positions == rankAttention.positions else {
            throw DistFlashError(.shapeMismatch, "rank \(rankAttention.rank): the shard's \(positions.count) positions "
                + "are not the plan's (\(rankAttention.positions.count) tokens): shard the batch with RankContext.shard")
        }
    }
}
