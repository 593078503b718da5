import ArgumentParser
import DistFlashAttn
import DistFlashAttnCUDA
import Foundation

/// `distflash bench cuda`: the CUDA attention kernels alone, device-resident bf16 inputs, timed with CUDA events
/// (median). FLOPs 4·B·H·D per visible pair (causal ≈ half of 4·B·S²·H·D); backward 2.5×, forward+backward 3.5×.
struct CUDABench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda", abstract: "Throughput of the CUDA forward and backward kernels (TFLOP/s), device-resident inputs.")

    @Option(help: "Sequence lengths, comma separated.") var seqs = "4096,8192,16384,32768,65536"
    @Option(help: "Batch size B.") var batch = 1
    @Option(help: "Query heads H.") var heads = 32
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default H).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension D.") var headDim = 128
    @Option(help: "Masks to run, comma separated: causal, full, window=W.") var masks = "causal,full"
    @Option(help: "Timed repetitions per case (the median is reported).") var repeats = 10
    @Option(help: "GPU ordinal.") var device = 0
    @Flag(help: "Time the forward only.") var forwardOnly = false
    @Flag(help: "Print one JSON object per case.") var json = false

    func run() throws {
        let backend = CUDABackend(device: try CUDADevice(ordinal: device))
        if !json {
            let kernels = backend.usesTensorCores(headDim: headDim)
                ? "tensor cores (\(backend.blocks.instructions.rawValue))" : "SIMT"
            print("\(backend.device.name), kernels \(kernels), "
                + "B=\(batch) H=\(heads) H_kv=\(kvHeads ?? heads) D=\(headDim) bf16, median of \(repeats)")
            print("| mask | S | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
        }
        for mask in masks.split(separator: ",").map(String.init) {
            for s in try ProblemOptions.parseLengths(seqs) {
                let problem = try AttentionProblem(batch: batch, sequence: s, heads: heads, kvHeads: kvHeads,
                                                   headDim: headDim, mask: AttentionMask(try AttentionMask.parseKind(mask)),
                                                   dtype: .bf16)
                let times = try backend.blocks.benchmark(problem, repeats: repeats, backward: !forwardOnly)
                let flops = problem.forwardFLOPs
                var object: [String: Any] = ["mask": mask, "seq": s, "batch": batch, "heads": heads,
                                             "kv_heads": problem.kvHeads, "head_dim": headDim,
                                             "instructions": backend.blocks.instructions.rawValue,
                                             "forward_ms": times.forward * 1e3,
                                             "forward_tflops": flops / times.forward / 1e12]
                var row = String(format: "| %@ | %d | %.2f | %.1f |", mask, s, times.forward * 1e3,
                                 flops / times.forward / 1e12)
                if let backward = times.backward {
                    let total = times.forward + backward
                    object["backward_ms"] = backward * 1e3
                    object["backward_tflops"] = 2.5 * flops / backward / 1e12
                    object["forward_backward_ms"] = total * 1e3
                    object["forward_backward_tflops"] = 3.5 * flops / total / 1e12
                    row += String(format: " %.2f | %.1f | %.2f | %.1f |", backward * 1e3, 2.5 * flops / backward / 1e12,
                                  total * 1e3, 3.5 * flops / total / 1e12)
                } else {
                    row += " | | | |"
                }
                if json {
                    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
                                 as: UTF8.self))
                } else {
                    print(row)
                }
                fflush(nil)  // every stream: each row as soon as it is measured, also into a pipe that a time limit may cut
            }
        }
    }
}
