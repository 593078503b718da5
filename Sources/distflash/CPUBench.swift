import ArgumentParser
import DistFlashAttn
import DistFlashAttnCPU
import Foundation

/// `distflash bench cpu`: forward and forward+backward throughput of the CPU kernels over a list of sequence
/// lengths. FLOPs follow the convention 4·B·S²·H·D (visible pairs only), backward 2.5×.
struct CPUBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu", abstract: "Throughput of the CPU attention kernels (GFLOP/s).")

    @Option(help: "Sequence lengths, comma separated.") var seqs = "2048,4096,8192"
    @Option(help: "Batch size B.") var batch = 1
    @Option(help: "Query heads H.") var heads = 8
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default H).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension D.") var headDim = 128
    @Option(help: "Mask: causal, full or window=W.") var mask = "causal"
    @Option(help: "Timed repetitions per case (the median is reported).") var repeats = 3
    @Option(help: "CPU threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object per case.") var json = false

    func run() throws {
        let backend = CPUBackend(workers: threads)
        let kind = try AttentionMask.parseKind(mask)
        if !json {
            print("CPU attention, \(backend.instructionSet), \(backend.workers) threads; median of \(repeats)")
            print("|     S | fwd ms | fwd GFLOP/s | fwd+bwd ms | fwd+bwd GFLOP/s |")
            print("|------:|-------:|------------:|-----------:|----------------:|")
        }
        for s in try ProblemOptions.parseLengths(seqs) {
            let problem = try AttentionProblem(batch: batch, sequence: s, heads: heads, kvHeads: kvHeads,
                                               headDim: headDim, mask: AttentionMask(kind))
            var random = SeededRandom(seed: UInt64(s))
            let q = random.normalTensor(shape: problem.queryShape)
            let k = random.normalTensor(shape: problem.keyValueShape)
            let v = random.normalTensor(shape: problem.keyValueShape)
            let dO = random.normalTensor(shape: problem.queryShape)

            _ = try backend.attention(problem, query: q, key: k, value: v)  // warm-up
            let forward = try median(repeats) { _ = try backend.attention(problem, query: q, key: k, value: v) }
            let both = try median(repeats) {
                let result = try backend.attention(problem, query: q, key: k, value: v)
                _ = try backend.attentionBackward(problem, query: q, key: k, value: v, result: result, outputGrad: dO)
            }
            let (f1, f2) = (problem.forwardFLOPs / forward / 1e9, 3.5 * problem.forwardFLOPs / both / 1e9)
            if json {
                let object: [String: Any] = [
                    "seq": s, "batch": batch, "heads": heads, "kv_heads": problem.kvHeads, "head_dim": headDim,
                    "mask": mask, "threads": backend.workers, "isa": backend.instructionSet.description,
                    "forward_ms": forward * 1e3, "forward_gflops": f1, "fwd_bwd_ms": both * 1e3, "fwd_bwd_gflops": f2,
                ]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(String(format: "| %5d | %6.1f | %11.2f | %10.1f | %15.2f |", s, forward * 1e3, f1, both * 1e3, f2))
            }
        }
    }

    /// Median wall time of `count` runs of `body`, in seconds.
    private func median(_ count: Int, _ body: () throws -> Void) throws -> Double {
        var times: [Double] = []
        for _ in 0..<max(1, count) {
            let start = ContinuousClock.now
            try body()
            times.append((ContinuousClock.now - start).seconds)
        }
        return times.sorted()[times.count / 2]
    }
}
