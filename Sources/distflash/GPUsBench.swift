import ArgumentParser
import DistFlashAttn
import DistFlashAttnCUDA
import Foundation

/// `distflash bench gpus`: every plan over P GPUs of this process (NCCL between them, shards resident on the
/// GPUs), forward and backward, beside our single-GPU kernel at the same S/P and the simulator's prediction. The
/// simulator's device rate is the single-GPU kernel's measured rate at S/P and its link is fitted from two
/// measured transfers (64 MiB and 256 MiB between GPUs 0 and 1).
struct GPUsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpus", abstract: "Every plan over P GPUs (TFLOP/s per GPU) beside one GPU and the simulator.")

    @Option(help: "GPUs P (ranks 0..<P on GPUs 0..<P).") var gpus = 4
    @Option(help: "Plans, comma separated.") var plans = "ring,zigzag,striped,distflash,allgather,ulysses"
    @Option(help: "Total sequence lengths S, comma separated.") var seqs = "32768,65536,131072,262144"
    @Option(help: "Batch size B.") var batch = 1
    @Option(help: "Query heads H.") var heads = 32
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default H).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension D.") var headDim = 128
    @Option(help: "Masks, comma separated: causal, full, window=W.") var masks = "causal,full"
    @Option(help: "Timed repetitions per case (the median is reported).") var repeats = 3
    @Option(help: "Seconds a rank may wait for a message.") var timeout = 120.0
    @Flag(help: "Print one JSON object per case.") var json = false

    func validate() throws {
        guard gpus >= 2 else { throw ValidationError("--gpus \(gpus): a multi-GPU benchmark needs ≥ 2") }
        guard repeats >= 1 else { throw ValidationError("--repeats \(repeats): must be ≥ 1") }
    }

    func run() throws {
        let devices = try (0..<gpus).map { try CUDADevice(ordinal: $0) }
        let kinds = try plans.split(separator: ",").map { name in
            guard let kind = Plan.Kind(rawValue: String(name)) else {
                throw ValidationError("--plans: unknown plan '\(name)' (known: \(Plan.Kind.allCases.map(\.rawValue)))")
            }
            return kind
        }
        let single = CUDABlocks(device: devices[0])
        var alone: [String: (forward: Double, backward: Double)] = [:]
        var link: LinkModel?
        for kind in kinds {
            // One NCCL communicator per plan (its setup is not timed).
            let run = try MultiGPUAttention(plan: kind, devices: devices, timeout: timeout)
            if link == nil {
                let (small, large) = (64 << 20, 256 << 20)
                let (t1, t2) = (try run.transferSeconds(bytes: small, repeats: 5),
                                try run.transferSeconds(bytes: large, repeats: 5))
                let bandwidth = Double(large - small) / max(t2 - t1, 1e-9)
                link = LinkModel(name: "fitted", bandwidth: bandwidth, latency: max(0, t1 - Double(small) / bandwidth))
                if !json {
                    print("\(devices[0].name) × \(gpus), B=\(batch) H=\(heads) H_kv=\(kvHeads ?? heads) D=\(headDim) bf16, "
                        + "median of \(repeats); link fitted from GPU 0 → 1 transfers: \(link!)")
                    print("| plan | mask | S | fwd ms | fwd TFLOP/s/GPU | bwd ms | bwd TFLOP/s/GPU | "
                        + "fwd+bwd TFLOP/s/GPU | vs 1 GPU at S/P | simulated fwd / bwd ms |")
                    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
                }
            }
            for mask in masks.split(separator: ",").map(String.init) {
                for s in try ProblemOptions.parseLengths(seqs) {
                    let problem = try AttentionProblem(batch: batch, sequence: s, heads: heads, kvHeads: kvHeads,
                                                       headDim: headDim,
                                                       mask: AttentionMask(try AttentionMask.parseKind(mask)), dtype: .bf16)
                    // One GPU on the shard-sized problem: the rate the distributed run should keep per GPU.
                    let shard = try AttentionProblem(batch: batch, sequence: (s + gpus - 1) / gpus, heads: heads,
                                                     kvHeads: kvHeads, headDim: headDim, mask: problem.mask, dtype: .bf16)
                    let key = "\(mask) \(s)"
                    if alone[key] == nil {
                        let times = try single.benchmark(shard, repeats: repeats, backward: true)
                        alone[key] = (times.forward, times.backward!)
                    }
                    try report(kind, problem, run, shard, alone[key]!, link!)
                }
            }
        }
    }

    /// Benchmarks one case and prints its row (or JSON object).
    private func report(_ kind: Plan.Kind, _ problem: AttentionProblem, _ run: MultiGPUAttention,
                        _ shard: AttentionProblem, _ alone: (forward: Double, backward: Double),
                        _ link: LinkModel) throws {
        let timing = try run.benchmark(problem, repeats: repeats)
        let flops = problem.forwardFLOPs
        let perGPU = { (work: Double, seconds: Double) in work / seconds / Double(gpus) / 1e12 }
        let aloneRate = 3.5 * shard.forwardFLOPs / (alone.forward + alone.backward) / 1e12
        let rate = perGPU(3.5 * flops, timing.forward + timing.backward)
        let simulate = { (plan: Plan, rate: Double) in
            Simulator(device: DeviceModel(name: "measured", flopsPerSecond: rate), link: link)
                .simulate(plan, problem: problem).makespan
        }
        let predicted = (simulate(timing.forwardPlan, shard.forwardFLOPs / alone.forward),
                         simulate(timing.backwardPlan, 2.5 * shard.forwardFLOPs / alone.backward))
        if json {
            let object: [String: Any] = [
                "plan": kind.rawValue, "mask": problem.mask.description, "seq": problem.sequence, "gpus": gpus,
                "batch": batch, "heads": heads, "kv_heads": problem.kvHeads, "head_dim": headDim,
                "forward_ms": timing.forward * 1e3, "backward_ms": timing.backward * 1e3,
                "forward_tflops_per_gpu": perGPU(flops, timing.forward),
                "backward_tflops_per_gpu": perGPU(2.5 * flops, timing.backward),
                "forward_backward_tflops_per_gpu": rate, "single_gpu_tflops_at_shard": aloneRate,
                "predicted_forward_ms": predicted.0 * 1e3, "predicted_backward_ms": predicted.1 * 1e3,
                "link_bandwidth": link.bandwidth, "link_latency": link.latency,
                "compute_ms_per_rank": zip(timing.forwardStatistics, timing.backwardStatistics)
                    .map { ($0.computeSeconds + $1.computeSeconds) * 1e3 },
                "wait_ms_per_rank": zip(timing.forwardStatistics, timing.backwardStatistics)
                    .map { ($0.waitSeconds + $1.waitSeconds) * 1e3 },
                "bytes_sent_per_rank": zip(timing.forwardStatistics, timing.backwardStatistics)
                    .map { $0.bytesSent + $1.bytesSent },
                "device_peak_bytes_per_rank": timing.devicePeakBytes,
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(String(format: "| %@ | %@ | %d | %.2f | %.1f | %.2f | %.1f | %.1f | %.2f× | %.2f / %.2f |",
                         kind.rawValue, problem.mask.description, problem.sequence, timing.forward * 1e3,
                         perGPU(flops, timing.forward), timing.backward * 1e3, perGPU(2.5 * flops, timing.backward),
                         rate, rate / aloneRate, predicted.0 * 1e3, predicted.1 * 1e3))
        }
        fflush(nil)  // every stream: each row as soon as it is measured, also into a pipe that a time limit may cut
    }
}
