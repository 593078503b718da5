import DistFlashAttn
import Foundation

/// The one rank of this process in a run of P processes (one per GPU, started by torchrun, mpirun, srun or by
/// hand): rank 0 makes the NCCL id and hands it to the others over TCP at MASTER_ADDR:MASTER_PORT, then every
/// process runs its own rank of the plan with its shard resident on its GPU. Results are gathered on rank 0
/// (over NCCL) for the caller to check or save.
public struct ProcessRankAttention: Sendable {
    /// Plan, overlap, timeout and the induced failure; `ranks` is the world size.
    public var run: DistributedAttention
    public let launch: LaunchEnvironment
    public let blocks: CUDABlocks
    private let communicator: NCCLCommunicator

    /// Joins the run `launch` describes on GPU `launch.localRank`; blocks until every rank has joined (bounded by
    /// `timeout`, naming the ranks that never came).
    public init(plan: Plan.Kind, launch: LaunchEnvironment, timeout: TimeInterval = 60,
                inputs: DeviceTensor.Precision = .bfloat16) throws {
        self.launch = launch
        run = DistributedAttention(plan: plan, ranks: launch.worldSize)
        run.timeout = timeout
        let device = try CUDADevice(ordinal: launch.localRank)
        blocks = CUDABlocks(device: device, inputs: inputs)
        communicator = try .joining(launch, device: device, timeout: timeout, inputs: inputs)
    }

    /// One pass: on rank 0, the gathered full result and every rank's figures; on the others, their own figures.
    public struct Outcome<Value: Sendable>: Sendable {
        public var value: Value?
        public var plan: Plan
        /// By rank on rank 0; this rank's alone elsewhere.
        public var statistics: [RankStatistics]
        /// Seconds this rank took (from its start to the end of the pass, the final barrier included).
        public var seconds: Double
        /// Each GPU's peak memory during the pass, like `statistics`.
        public var devicePeakBytes: [Int]
        /// This rank's own results, still on its GPU (forward: .output, .logSumExp — the backward's inputs).
        public var shards: [ShardTensor: DeviceTensor]
    }

    /// The forward over the whole sequence; every process passes the same full inputs and keeps its shard.
    public func forward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor) throws
        -> Outcome<AttentionPartial> {
        let plan = try run.gpuPlan(problem, .forward, inputs: blocks.inputs)
        let shards = try blocks.place(try plan.layout.shards([.query: query, .key: key, .value: value],
                                                             rank: launch.rank))
        let (outputs, statistics, seconds, peaks) = try execute(plan, problem, shards)
        let value = try gather(outputs, [.output, .logSumExp], plan).map { ranks in
            AttentionPartial(output: try plan.layout.unshard(.output, from: ranks),
                             logSumExp: try plan.layout.unshard(.logSumExp, from: ranks))
        }
        return Outcome(value: value, plan: plan, statistics: statistics, seconds: seconds, devicePeakBytes: peaks,
                       shards: outputs)
    }

    /// dQ, dK, dV given this rank's forward (its O and LSE stay on the GPU) and dO `[B, S, H, D]` (the same on
    /// every process).
    public func backward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                         forward: Outcome<AttentionPartial>, outputGrad: Tensor) throws -> Outcome<AttentionGradients> {
        let plan = try run.gpuPlan(problem, .backward, inputs: blocks.inputs)
        var shards = try blocks.place(try plan.layout.shards([.query: query, .key: key, .value: value,
                                                              .outputGrad: outputGrad], rank: launch.rank))
        (shards[.output], shards[.logSumExp]) = (forward.shards[.output], forward.shards[.logSumExp])
        let (outputs, statistics, seconds, peaks) = try execute(plan, problem, shards)
        let value = try gather(outputs, [.queryGrad, .keyGrad, .valueGrad], plan).map { ranks in
            AttentionGradients(query: try plan.layout.unshard(.queryGrad, from: ranks),
                               key: try plan.layout.unshard(.keyGrad, from: ranks),
                               value: try plan.layout.unshard(.valueGrad, from: ranks))
        }
        return Outcome(value: value, plan: plan, statistics: statistics, seconds: seconds, devicePeakBytes: peaks,
                       shards: outputs)
    }

    /// Runs this rank; returns its outputs, the figures (every rank's on rank 0), its seconds.
    private func execute(_ plan: Plan, _ problem: AttentionProblem, _ shards: [ShardTensor: DeviceTensor]) throws
        -> ([ShardTensor: DeviceTensor], [RankStatistics], Double, [Int]) {
        _ = try blocks.finish()
        _ = try blocks.device.peakMemoryBytes(reset: true)
        let (outputs, statistics, seconds) = try run.runRank(launch.rank, plan, problem, backend: blocks,
                                                             communicator: communicator, shards: shards)
        let peak = try blocks.device.peakMemoryBytes()
        let figures = try gatherFigures(statistics, peak)
        return (outputs, figures?.map(\.0) ?? [statistics], seconds, figures?.map(\.1) ?? [peak])
    }

    /// Every rank's figures on rank 0 (nil elsewhere). Each number travels as its bits (two fp32 words per 64-bit
    /// value), so counts and times arrive exact.
    private func gatherFigures(_ statistics: RankStatistics, _ peak: Int) throws -> [(RankStatistics, Int)]? {
        let words = [statistics.computeSeconds.bitPattern, statistics.waitSeconds.bitPattern]
            + [statistics.bytesSent, statistics.bytesReceived, statistics.peakExtraBytes, peak].map { UInt64(bitPattern: Int64($0)) }
        let floats = words.flatMap { [Float(bitPattern: UInt32(truncatingIfNeeded: $0)), Float(bitPattern: UInt32($0 >> 32))] }
        let mine = try blocks.upload(try Tensor(shape: [floats.count], scalars: floats), as: .accumulator)
        let tag = Int.max - 4
        guard launch.rank == 0 else {
            _ = try communicator.exchange(Exchange(sends: [.init(to: 0, tag: tag, payload: [mine])]), rank: launch.rank)
            return nil
        }
        let receives = (1..<run.ranks).map { ExchangeReceive(from: $0, tag: tag, shapes: [[floats.count]]) }
        let others = try communicator.exchange(Exchange(receives: receives), rank: 0).map { $0[0] }
        return try ([mine] + others).map { tensor in
            let bits = try tensor.download().scalars.map(\.bitPattern)
            let values = stride(from: 0, to: bits.count, by: 2).map { UInt64(bits[$0]) | UInt64(bits[$0 + 1]) << 32 }
            var figures = RankStatistics()
            figures.computeSeconds = Double(bitPattern: values[0])
            figures.waitSeconds = Double(bitPattern: values[1])
            (figures.bytesSent, figures.bytesReceived, figures.peakExtraBytes) =
                (Int(Int64(bitPattern: values[2])), Int(Int64(bitPattern: values[3])), Int(Int64(bitPattern: values[4])))
            return (figures, Int(Int64(bitPattern: values[5])))
        }
    }

    /// Every rank's outputs of `roles` on rank 0, by rank, as host tensors (nil on the other ranks).
    private func gather(_ outputs: [ShardTensor: DeviceTensor], _ roles: [ShardTensor], _ plan: Plan) throws
        -> [[ShardTensor: Tensor]]? {
        let tag = Int.max - 3
        let mine = roles.map { outputs[$0]! }
        guard launch.rank == 0 else {
            _ = try communicator.exchange(Exchange(sends: [.init(to: 0, tag: tag, payload: mine)]), rank: launch.rank)
            return nil
        }
        let receives = (1..<run.ranks).map { peer in
            ExchangeReceive(from: peer, tag: tag, shapes: zip(roles, mine).map { role, tensor in
                var shape = tensor.shape
                shape[role.tokenAxis] = plan.layout.count(rank: peer)
                return shape
            }, precisions: roles.map(\.precision))
        }
        let others = try communicator.exchange(Exchange(receives: receives), rank: 0)
        return try ([mine] + others).map { tensors in
            Dictionary(uniqueKeysWithValues: try zip(roles, tensors).map { ($0, try $1.download()) })
        }
    }
}
