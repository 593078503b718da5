import ArgumentParser
import DistFlashAttn
import DistFlashAttnCUDA
import Foundation

/// `distflash bench cuda`: the CUDA forward kernel alone, device-resident bf16 inputs, timed with CUDA events
/// (median). FLOPs 4·B·H·D per visible pair (causal ≈ half of 4·B·S²·H·D).
struct CUDABench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda", abstract: "Throughput of the CUDA forward kernel (TFLOP/s), device-resident inputs.")

    @Option(help: "Sequence lengths, comma separated.") var seqs = "4096,8192,16384,32768,65536"
    @Option(help: "Batch size B.") var batch = 1
    @Option(help: "Query heads H.") var heads = 32
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default H).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension D.") var headDim = 128
    @Option(help: "Masks to run, comma separated: causal, full, window=W.") var masks = "causal,full"
    @Option(help: "Timed repetitions per case (the median is reported).") var repeats = 10
    @Option(help: "GPU ordinal.") var device = 0
    @Flag(help: "Print one JSON object per case.") var json = false

    func run() throws {
        let backend = CUDABackend(device: try CUDADevice(ordinal: device))
        if !json {
            print("\(backend.device.name), forward kernel \(backend.usesTensorCores(headDim: headDim) ? "tensor cores" : "SIMT"), "
                + "B=\(batch) H=\(heads) D=\(headDim) bf16, median of \(repeats)")
            print("| mask | S | fwd ms | fwd TFLOP/s |")
            print("|---|---:|---:|---:|")
        }
        for mask in masks.split(separator: ",").map(String.init) {
            for s in try ProblemOptions.parseLengths(seqs) {
                let problem = try AttentionProblem(batch: batch, sequence: s, heads: heads, kvHeads: kvHeads,
                                                   headDim: headDim, mask: AttentionMask(try AttentionMask.parseKind(mask)),
                                                   dtype: .bf16)
                let seconds = try backend.benchmarkForward(problem, repeats: repeats)
                let tflops = problem.forwardFLOPs / seconds / 1e12
                if json {
                    let object: [String: Any] = ["mask": mask, "seq": s, "batch": batch, "heads": heads,
                                                 "kv_heads": problem.kvHeads, "head_dim": headDim,
                                                 "forward_ms": seconds * 1e3, "forward_tflops": tflops]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
                                 as: UTF8.self))
                } else {
                    print(String(format: "| %@ | %d | %.2f | %.1f |", mask, s, seconds * 1e3, tflops))
                }
            }
        }
    }
}
