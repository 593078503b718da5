import DistFlashAttn
import DistFlashAttnCUDA
import Synchronization

/// The attention of one rank of a sequence-parallel GPU group: the plan's forward and backward steps over NCCL,
/// shards resident on the rank's GPU (`DistributedAttention.runRank` on `CUDABlocks`). The model passes this
/// rank's shard, whose positions must be the plan's layout for the rank.
public final class PlanDeviceAttention: DeviceAttention {
    public let rank: Int
    public let problem: AttentionProblem
    public let plans: RankAttention.Plans
    let blocks: CUDABlocks
    let communicator: NCCLCommunicator
    let run: DistributedAttention
    private let calls = Atomic<Int>(0)

    /// `problem`: one layer's attention over the whole sequence (bf16); `plans`: the `kind`'s, verified for it.
    public init(rank: Int, problem: AttentionProblem, kind: Plan.Kind, plans: RankAttention.Plans, blocks: CUDABlocks,
                communicator: NCCLCommunicator, overlap: Bool = true) {
        (self.rank, self.problem, self.plans, self.blocks, self.communicator) = (rank, problem, plans, blocks, communicator)
        var run = DistributedAttention(plan: kind, ranks: communicator.ranks)
        run.overlap = overlap
        self.run = run
    }

    /// Global positions of this rank's tokens `[n]`.
    public var positions: [Int] { plans.forward.layout.positions(rank: rank) }
    public var forwardCalls: Int { calls.load(ordering: .relaxed) }

    public func forward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int]) throws
        -> (output: DeviceTensor, logSumExp: DeviceTensor) {
        try requirePlanPositions(positions)
        calls.add(1, ordering: .relaxed)
        let outputs = try run.runRank(rank, plans.forward, problem, backend: blocks, communicator: communicator,
                                      shards: [.query: query, .key: key, .value: value]).outputs
        return (try blocks.narrowed(outputs[.output]!), outputs[.logSumExp]!)  // the merged fp32 O, rounded once
    }

    public func backward(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, positions: [Int],
                         output: DeviceTensor, logSumExp: DeviceTensor, outputGrad: DeviceTensor) throws
        -> (query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) {
        try requirePlanPositions(positions)
        // The plan's transfers carry O as an fp32 accumulator (helpers compute δ for the rows they take).
        let output = output.precision == .float32 ? output : try blocks.widened(output)
        let outputs = try run.runRank(rank, plans.backward, problem, backend: blocks, communicator: communicator,
                                      shards: [.query: query, .key: key, .value: value, .output: output,
                                               .outputGrad: outputGrad, .logSumExp: logSumExp]).outputs
        return (outputs[.queryGrad]!, outputs[.keyGrad]!, outputs[.valueGrad]!)
    }

    private func requirePlanPositions(_ positions: [Int]) throws {
        guard positions == self.positions else {
            throw DistFlashError(.shapeMismatch, "rank \(rank): the shard's \(positions.count) positions are not the "
                + "plan's (\(self.positions.count) tokens): shard the batch by the plan's layout")
        }
    }
}
