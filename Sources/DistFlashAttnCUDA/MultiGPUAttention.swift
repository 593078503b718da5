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

    /// Rank r on `devices[r]`, for problems whose inputs are `inputs` (bf16 or fp16).
    public init(plan: Plan.Kind, devices: [CUDADevice], timeout: TimeInterval = 60,
                inputs: DeviceTensor.Precision = .bfloat16) throws {
        run = DistributedAttention(plan: plan, ranks: devices.count)
        run.timeout = timeout
        blocks = devices.map { CUDABlocks(device: $0, inputs: inputs) }
        communicator = try NCCLCommunicator(devices: devices, timeout: timeout, inputs: inputs)
    }

    /// What one pass measured beyond the executor's figures: each GPU's peak memory during it.
    public struct Figures: Sendable {
        public var devicePeakBytes: [Int]
    }

    /// O and LSE of attention over the whole sequence. Query `[B, S, H, D]`, key/value `[B, S, H_kv, D]`.
    public func forward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor) throws
        -> (DistributedAttention.Outcome<AttentionPartial>, Figures) {
        let plan = try run.gpuPlan(problem, .forward, inputs: communicator.inputs)
        let (outcome, figures) = try execute(plan, problem, [.query: query, .key: key, .value: value])
        let result = AttentionPartial(output: try plan.layout.unshard(.output, from: outcome.value),
                                      logSumExp: try plan.layout.unshard(.logSumExp, from: outcome.value))
        return (.init(value: result, plan: plan, statistics: outcome.statistics, seconds: outcome.seconds), figures)
    }

    /// dQ, dK, dV given the forward's result and dO `[B, S, H, D]`.
    public func backward(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                         result: AttentionPartial, outputGrad: Tensor) throws
        -> (DistributedAttention.Outcome<AttentionGradients>, Figures) {
        try outputGrad.requireShape(problem.queryShape, "dO")
        let plan = try run.gpuPlan(problem, .backward, inputs: communicator.inputs)
        let (outcome, figures) = try execute(plan, problem, [.query: query, .key: key, .value: value,
                                                             .output: result.output, .outputGrad: outputGrad,
                                                             .logSumExp: result.logSumExp])
        let grads = AttentionGradients(query: try plan.layout.unshard(.queryGrad, from: outcome.value),
                                       key: try plan.layout.unshard(.keyGrad, from: outcome.value),
                                       value: try plan.layout.unshard(.valueGrad, from: outcome.value))
        return (.init(value: grads, plan: plan, statistics: outcome.statistics, seconds: outcome.seconds), figures)
    }

    /// Places each rank's shards of the full `inputs` on its GPU, runs the plan (the clock starts once every shard
    /// is in place) and brings each rank's outputs back to the host.
    private func execute(_ plan: Plan, _ problem: AttentionProblem, _ inputs: [ShardTensor: Tensor]) throws
        -> (DistributedAttention.Outcome<[[ShardTensor: Tensor]]>, Figures) {
        let shards = try blocks.indices.map { try blocks[$0].place(try plan.layout.shards(inputs, rank: $0)) }
        for rank in blocks.indices {
            _ = try blocks[rank].finish()
            _ = try blocks[rank].device.peakMemoryBytes(reset: true)
        }
        let outcome = try run.run(plan, problem, backends: { blocks[$0] }, communicator: communicator) { shards[$0] }
        let peaks = try blocks.map { try $0.device.peakMemoryBytes() }
        let outputs = try outcome.value.map { try $0.mapValues { try $0.download() } }
        return (.init(value: outputs, plan: plan, statistics: outcome.statistics, seconds: outcome.seconds),
                Figures(devicePeakBytes: peaks))
    }
}

extension DistributedAttention {
    /// This run's plan for `problem`'s `pass`, verified, for CUDA kernels built for `inputs`.
    func gpuPlan(_ problem: AttentionProblem, _ pass: Plan.Pass, inputs: DeviceTensor.Precision) throws -> Plan {
        guard DeviceTensor.Precision(inputsOf: problem.dtype) == inputs else {
            throw DistFlashError(.runtime, "dtype \(problem.dtype): these GPU ranks were set up for \(inputs) inputs "
                + "(the CUDA kernels take bf16 or fp16: use --dtype bf16 or --dtype fp16)")
        }
        let plan = try Plan.make(self.plan, problem: problem, ranks: ranks, pass: pass)
        try plan.verify(problem: problem)
        return plan
    }
}
