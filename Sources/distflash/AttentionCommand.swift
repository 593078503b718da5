import ArgumentParser
import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnCUDA
import DistFlashAttnReference
import Foundation

struct AttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Run attention forward (and backward) and optionally check it against the float64 reference."
    )

    @OptionGroup var problemOptions: ProblemOptions
    @OptionGroup var parallel: ParallelOptions
    @Flag(help: "Also run the backward pass (dQ, dK, dV).") var backward = false
    @Flag(help: "Compare with naive float64 attention; exit non-zero if the tolerance rule fails.") var check = false
    @Option(help: "Seed for random inputs.") var seed: UInt64 = 0
    @Option(help: "Read q.npy, k.npy, v.npy (and do.npy with --backward) from this folder.") var inputs: String?
    @Option(help: "Write o.npy, lse.npy (and dq.npy, dk.npy, dv.npy) to this folder.") var outputs: String?
    @Option(help: "CPU threads (default: all cores, or DISTFLASH_THREADS).") var threads: Int?
    @Option(help: "Backend: cpu or cuda (Q, K, V as bf16, or fp16 with --dtype fp16).") var backend: BackendKind = .cpu
    @Option(help: "GPU ordinal for --backend cuda.") var device = 0
    @Option(help: "With --backend cuda: P ranks on GPUs 0..<P of this process, exchanging through NCCL.")
    var gpus: Int?
    @Flag(help: "Print one JSON object instead of text.") var json = false

    enum BackendKind: String, ExpressibleByArgument { case cpu, cuda }

    func validate() throws {
        // Under a launcher the ranks are its processes.
        let processes = (try? LaunchEnvironment.detect(ProcessInfo.processInfo.environment))??.worldSize
        try parallel.validateFailRank(ranks: gpus ?? (backend == .cuda ? processes : nil) ?? parallel.workers)
        if let gpus {
            guard backend == .cuda else { throw ValidationError("--gpus \(gpus) needs --backend cuda") }
            guard gpus >= 1 else { throw ValidationError("--gpus \(gpus): must be ≥ 1") }
            guard parallel.workers == 1 || parallel.workers == gpus else {
                throw ValidationError("--gpus \(gpus) with --workers \(parallel.workers): give one of them (--gpus P "
                    + "runs P ranks, one per GPU)")
            }
        }
    }

    func run() throws {
        // Started by a launcher (torchrun, mpirun, srun) as one of several processes: this process is one rank.
        let launch = backend == .cuda && gpus == nil
            ? try LaunchEnvironment.detect(ProcessInfo.processInfo.environment).flatMap { $0.worldSize > 1 ? $0 : nil }
            : nil
        // The GPU takes Q, K, V as bf16 (or fp16 when asked): round them on the host too, so the reference sees the
        // same inputs.
        let (problem, q, k, v, dO) = try loadInputs(dtype: backend == .cuda
            ? (problemOptions.dtype == .fp16 ? .fp16 : .bf16) : nil)
        let inputs = DeviceTensor.Precision(inputsOf: problem.dtype) ?? .bfloat16
        let cpu = CPUBackend(workers: threads)
        let gpu = backend == .cuda && launch == nil
            ? try CUDABackend(device: CUDADevice(ordinal: device), inputs: inputs) : nil
        let single: any AttentionBackend = gpu ?? cpu
        var report = RunReport(problem: problem, backend: gpu.map { "cuda (\($0.device.name))" } ?? backend.rawValue,
                               isa: cpu.instructionSet.description, workers: cpu.workers)
        var result = AttentionPartial(output: Tensor(shape: [0]), logSumExp: Tensor(shape: [0]))
        var gradients: AttentionGradients?

        if let launch {
            // Only rank 0 holds the gathered result, checks and reports it.
            guard try runAsProcess(launch, problem, q, k, v, dO, report: &report, result: &result,
                                   gradients: &gradients) else { return }
        } else if let gpus {
            try runOnGPUs(gpus, problem, q, k, v, dO, report: &report, result: &result, gradients: &gradients)
        } else if parallel.isDistributed {
            let (run, rankBackend) = try distributedRun(cpu: cpu, gpu: gpu)
            let clock = ContinuousClock.now
            let forward = try run.forward(problem, query: q, key: k, value: v, backend: rankBackend)
            report.forwardSeconds = (ContinuousClock.now - clock).seconds
            result = forward.value
            report.plan = forward.plan.name
            report.ranks = forward.statistics
            if let dO {
                let clock = ContinuousClock.now
                let backward = try run.backward(problem, query: q, key: k, value: v, result: result, outputGrad: dO,
                                                backend: rankBackend)
                report.backwardSeconds = (ContinuousClock.now - clock).seconds
                gradients = backward.value
                report.ranks = zip(forward.statistics, backward.statistics).map { $0 + $1 }
            }
        } else {
            let clock = ContinuousClock.now
            result = try single.attention(problem, query: q, key: k, value: v)
            report.forwardSeconds = (ContinuousClock.now - clock).seconds
            if let dO {
                let clock = ContinuousClock.now
                gradients = try single.attentionBackward(problem, query: q, key: k, value: v, result: result, outputGrad: dO)
                report.backwardSeconds = (ContinuousClock.now - clock).seconds
            }
        }

        if let outputs {
            var arrays = [("o.npy", result.output), ("lse.npy", result.logSumExp)]
            if let gradients { arrays += [("dq.npy", gradients.query), ("dk.npy", gradients.key), ("dv.npy", gradients.value)] }
            try NPY.writeAll(arrays, to: URL(fileURLWithPath: outputs))
        }
        let checks = check ? ReferenceCheck.run(problem, query: q, key: k, value: v, result: result,
                                                outputGrad: dO, gradients: gradients,
                                                precision: backend == .cuda
                                                    ? .of(problem.dtype, tensorCores: CUDABlocks.usesTensorCores(headDim: problem.headDim))
                                                    : .fp32) : []

        report.checks = checks
        report.print(json: json)
        if check && !checks.allSatisfy(\.passed) { throw ExitCode(1) }
    }

    /// `--gpus P`: rank r on GPU r, shards resident on the GPUs, NCCL between them. Times exclude placing the
    /// shards and reading the results back.
    private func runOnGPUs(_ gpus: Int, _ problem: AttentionProblem, _ q: Tensor, _ k: Tensor, _ v: Tensor,
                           _ dO: Tensor?, report: inout RunReport, result: inout AttentionPartial,
                           gradients: inout AttentionGradients?) throws {
        var run = try MultiGPUAttention(plan: parallel.plan ?? .distflash,
                                        devices: (0..<gpus).map { try CUDADevice(ordinal: $0) }, timeout: parallel.timeout,
                                        inputs: DeviceTensor.Precision(inputsOf: problem.dtype) ?? .bfloat16)
        run.run.overlap = parallel.distributed.overlap
        run.run.failure = parallel.distributed.failure
        let (forward, forwardFigures) = try run.forward(problem, query: q, key: k, value: v)
        result = forward.value
        let backward = try dO.map { try run.backward(problem, query: q, key: k, value: v, result: result, outputGrad: $0) }
        gradients = backward?.0.value
        report.recordGPURun(gpus: gpus,
                            forward: .init(plan: forward.plan, seconds: forward.seconds, statistics: forward.statistics,
                                           devicePeakBytes: forwardFigures.devicePeakBytes),
                            backward: backward.map {
                                .init(plan: $0.0.plan, seconds: $0.0.seconds, statistics: $0.0.statistics,
                                      devicePeakBytes: $0.1.devicePeakBytes)
                            })
    }

    /// One rank of a multi-process run on GPU LOCAL_RANK; returns whether this is rank 0, which then holds the
    /// gathered result and every rank's figures.
    private func runAsProcess(_ launch: LaunchEnvironment, _ problem: AttentionProblem, _ q: Tensor, _ k: Tensor,
                              _ v: Tensor, _ dO: Tensor?, report: inout RunReport, result: inout AttentionPartial,
                              gradients: inout AttentionGradients?) throws -> Bool {
        var run = try ProcessRankAttention(plan: parallel.plan ?? .distflash, launch: launch, timeout: parallel.timeout,
                                           inputs: DeviceTensor.Precision(inputsOf: problem.dtype) ?? .bfloat16)
        run.run.overlap = parallel.distributed.overlap
        run.run.failure = parallel.distributed.failure
        let forward = try run.forward(problem, query: q, key: k, value: v)
        let backward = try dO.map { try run.backward(problem, query: q, key: k, value: v, forward: forward, outputGrad: $0) }
        if let value = forward.value { result = value }
        gradients = backward?.value
        report.backend = "cuda (\(run.blocks.device.name)), \(launch.worldSize) processes (\(launch.launcher))"
        report.recordGPURun(gpus: launch.worldSize,
                            forward: .init(plan: forward.plan, seconds: forward.seconds, statistics: forward.statistics,
                                           devicePeakBytes: forward.devicePeakBytes),
                            backward: backward.map {
                                .init(plan: $0.plan, seconds: $0.seconds, statistics: $0.statistics,
                                      devicePeakBytes: $0.devicePeakBytes)
                            })
        return launch.rank == 0
    }

    /// The distributed run and each rank's backend: P workers share this process's CPU cores (or its one GPU)
    /// through in-process mailboxes.
    private func distributedRun(cpu: CPUBackend, gpu: CUDABackend?) throws
        -> (DistributedAttention, (Int) -> any AttentionBackend) {
        let run = parallel.distributed
        // Each worker's kernels get an equal share of the cores.
        let perWorker: any AttentionBackend = gpu
            ?? CPUBackend(workers: max(1, cpu.workers / parallel.workers), instructionSet: cpu.instructionSet)
        return (run, { _ in perWorker })
    }

    /// Inputs from `--inputs` (shapes taken from the files) or random from `--seed`; rounded to bf16 / fp16 if
    /// asked.
    private func loadInputs(dtype: AttentionProblem.DType?) throws -> (AttentionProblem, Tensor, Tensor, Tensor, Tensor?) {
        var problem: AttentionProblem
        var q: Tensor, k: Tensor, v: Tensor, dO: Tensor?
        if let inputs {
            let folder = URL(fileURLWithPath: inputs)
            func load(_ name: String) throws -> Tensor {
                let tensor = try NPY.read(folder.appendingPathComponent(name))
                guard tensor.shape.count == 4 else {
                    throw DistFlashError(.invalidFile, "\(name) has shape \(tensor.shape): expected 4 dimensions [B, S, H, D]")
                }
                return tensor
            }
            (q, k, v) = (try load("q.npy"), try load("k.npy"), try load("v.npy"))
            problem = try problemOptions.problem(shapes: (q.shape, k.shape))
            try k.requireShape(problem.keyValueShape, "k.npy (for q.npy \(q.shape))")
            try v.requireShape(problem.keyValueShape, "v.npy (for q.npy \(q.shape))")
            if backward {
                dO = try load("do.npy")
                try dO!.requireShape(problem.queryShape, "do.npy")
            }
        } else {
            problem = try problemOptions.problem()
            var random = SeededRandom(seed: seed)
            q = random.normalTensor(shape: problem.queryShape)
            k = random.normalTensor(shape: problem.keyValueShape)
            v = random.normalTensor(shape: problem.keyValueShape)
            dO = backward ? random.normalTensor(shape: problem.queryShape) : nil
        }
        if let dtype { problem.dtype = dtype }
        (q, k, v) = (q.rounded(to: problem.dtype), k.rounded(to: problem.dtype), v.rounded(to: problem.dtype))
        dO = dO?.rounded(to: problem.dtype)
        return (problem, q, k, v, dO)
    }
}
