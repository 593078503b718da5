import DistFlashAttn
import Foundation

/// Exact attention over P GPUs of this process, one rank per GPU, following a plan: each rank's shards are placed
/// on its GPU once, every step's blocks and transfers stay on the devices (NCCL between them), and the results
/// come back to the host at the end. Same plans, executor and failure handling as the CPU ranks.
public struct MultiGPUAttention: Sendable {
    /// Plan, overlap, timeout and the induced failure; `ranks` is the GPU count.
    public var run: DistributedAttention
    public let blocks: [CUDABlocks]
    let communicator: NCCLCommunicator

    /// Rank r on `devices[r]`.
    public init(plan: Plan.Kind, devices: [CUDADevice], timeout: TimeInterval = 60) throws {
        run = DistributedAttention(plan: plan, ranks: devices.count)
        run.timeout = timeout
        blocks = devices.map { CUDABlocks(device: $0) }
        communicator = try NCCLCommunicator(devices: devices, timeout: timeout)
    }

    /// What one pass measured beyond the executor's figures: each GPU's peak memory during it.
    public struct Figures: Sendable {
        public var devicePeakBytes: [Int]
    }

    /// O and LSE of attention over the whole sequence. Query `[B, S, H, D]`, key/value `[B, S, H_kv, D]`.
    public func forward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor) throws
        -> (DistributedAttention.Outcome<AttentionPartial>, Figures) {
        let plan = try verifiedPlan(problem, .forward)
        let layout = plan.layout
        let shards = try (0..<run.ranks).map { rank -> [ShardTensor: DeviceTensor] in
            let place = { (tensor: Tensor, axis: Int, precision: BlockPrecision) in
                try self.blocks[rank].upload(try layout.shard(tensor, rank: rank, axis: axis), as: precision)
            }
            return [.query: try place(query, 1, .input), .key: try place(key, 1, .input),
                    .value: try place(value, 1, .input)]
        }
        let (outcome, figures) = try execute(plan, problem, shards)
        let result = AttentionPartial(
            output: try layout.unshard(try outcome.value.map { try $0[.output]!.download() }, axis: 1),
            logSumExp: try layout.unshard(try outcome.value.map { try $0[.logSumExp]!.download() }, axis: 2))
        return (.init(value: result, plan: plan, statistics: outcome.statistics, seconds: outcome.seconds), figures)
    }

    /// dQ, dK, dV given the forward's result and dO `[B, S, H, D]`.
    public func backward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                         result: AttentionPartial, outputGrad: Tensor) throws
        -> (DistributedAttention.Outcome<AttentionGradients>, Figures) {
        try outputGrad.requireShape(problem.queryShape, "dO")
        let plan = try verifiedPlan(problem, .backward)
        let layout = plan.layout
        let shards = try (0..<run.ranks).map { rank -> [ShardTensor: DeviceTensor] in
            let place = { (tensor: Tensor, axis: Int, precision: BlockPrecision) in
                try self.blocks[rank].upload(try layout.shard(tensor, rank: rank, axis: axis), as: precision)
            }
            return [.query: try place(query, 1, .input), .key: try place(key, 1, .input),
                    .value: try place(value, 1, .input), .output: try place(result.output, 1, .accumulator),
                    .outputGrad: try place(outputGrad, 1, .input),
                    .logSumExp: try place(result.logSumExp, 2, .accumulator)]
        }
        let (outcome, figures) = try execute(plan, problem, shards)
        let grads = AttentionGradients(
            query: try layout.unshard(try outcome.value.map { try $0[.queryGrad]!.download() }, axis: 1),
            key: try layout.unshard(try outcome.value.map { try $0[.keyGrad]!.download() }, axis: 1),
            value: try layout.unshard(try outcome.value.map { try $0[.valueGrad]!.download() }, axis: 1))
        return (.init(value: grads, plan: plan, statistics: outcome.statistics, seconds: outcome.seconds), figures)
    }

    private func verifiedPlan(_ problem: AttentionProblem, _ pass: Plan.Pass) throws -> Plan {
        try requireBF16(problem)
        let plan = try Plan.make(run.plan, problem: problem, ranks: run.ranks, pass: pass)
        try plan.verify(problem: problem)
        return plan
    }

    private func requireBF16(_ problem: AttentionProblem) throws {
        guard problem.dtype == .bf16 else {
            throw DistFlashError(.runtime, "dtype \(problem.dtype): the CUDA kernels take bf16 inputs (use --dtype bf16)")
        }
    }

    /// Runs the plan with the shards in place; the clock starts once every shard is on its GPU.
    private func execute(_ plan: Plan, _ problem: AttentionProblem, _ shards: [[ShardTensor: DeviceTensor]]) throws
        -> (DistributedAttention.Outcome<[[ShardTensor: DeviceTensor]]>, Figures) {
        for rank in blocks.indices {
            _ = try blocks[rank].finish()
            _ = try blocks[rank].device.peakMemoryBytes(reset: true)
        }
        let outcome = try run.run(plan, problem, backends: { blocks[$0] }, communicator: communicator) { shards[$0] }
        let peaks = try blocks.map { try $0.device.peakMemoryBytes() }
        return (outcome, Figures(devicePeakBytes: peaks))
    }
}
