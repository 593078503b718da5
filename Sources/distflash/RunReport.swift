import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Foundation

/// What one run measured, printed as text or as one JSON object (stable keys: time_ms, gflops, check_passed,
/// max_abs_err, mean_abs_err, peak_memory_bytes, …).
struct RunReport {
    var problem: AttentionProblem
    var backend: String
    var isa: String
    var workers: Int
    var forwardSeconds = 0.0
    var backwardSeconds: Double?
    var checks: [ToleranceCheck] = []
    /// Distributed runs: the plan and what each worker measured.
    var plan: String?
    var ranks: [RankStatistics] = []
    /// Runs over GPUs: their count, each one's peak memory, and the simulator's times for the plan (H100 model,
    /// NVLink link) beside the measured ones.
    var gpus: Int?
    var devicePeakBytes: [Int] = []
    var predictedForwardSeconds: Double?
    var predictedBackwardSeconds: Double?

    /// One pass over GPUs as the report needs it.
    struct GPUPass {
        var plan: Plan
        var seconds: Double
        var statistics: [RankStatistics]
        var devicePeakBytes: [Int]
    }

    /// Records a run over `gpus` GPUs: times, per-rank figures (the passes added; peak memory: the larger), and the
    /// simulator's times for the same plans beside them.
    mutating func recordGPURun(gpus: Int, forward: GPUPass, backward: GPUPass?) {
        self.gpus = gpus
        (plan, forwardSeconds, ranks, devicePeakBytes) = (forward.plan.name, forward.seconds, forward.statistics,
                                                          forward.devicePeakBytes)
        predictedForwardSeconds = Simulator().simulate(forward.plan, problem: problem).makespan
        guard let backward else { return }
        backwardSeconds = backward.seconds
        ranks = zip(forward.statistics, backward.statistics).map { $0 + $1 }
        devicePeakBytes = zip(forward.devicePeakBytes, backward.devicePeakBytes).map { max($0, $1) }
        predictedBackwardSeconds = Simulator().simulate(backward.plan, problem: problem).makespan
    }

    var totalSeconds: Double { forwardSeconds + (backwardSeconds ?? 0) }
    var flops: Double { problem.forwardFLOPs * (backwardSeconds == nil ? 1 : 3.5) }
    var checkPassed: Bool? { checks.isEmpty ? nil : checks.allSatisfy(\.passed) }

    func print(json: Bool) {
        if json { Swift.print(jsonText()) } else { Swift.print(text()) }
    }

    func text() -> String {
        let p = problem
        var lines = [
            "attention  B=\(p.batch) S=\(p.sequence) H=\(p.heads) H_kv=\(p.kvHeads) D=\(p.headDim)  "
                + "mask \(p.mask)  \(p.dtype.rawValue)  scale \(p.scale)",
            "backend    \(backend) (\(isa), \(workers) threads)"
                + (plan.map { ", plan \($0) on \(ranks.count) workers" } ?? ""),
            String(format: "forward    %10.3f ms  %8.2f GFLOP/s", forwardSeconds * 1e3,
                   p.forwardFLOPs / forwardSeconds / 1e9),
        ]
        if let backwardSeconds {
            lines.append(String(format: "backward   %10.3f ms  %8.2f GFLOP/s", backwardSeconds * 1e3,
                                2.5 * p.forwardFLOPs / backwardSeconds / 1e9))
            lines.append(String(format: "total      %10.3f ms  %8.2f GFLOP/s", totalSeconds * 1e3,
                                flops / totalSeconds / 1e9))
        }
        lines.append(String(format: "peak mem   %10.1f MiB", Double(PeakMemory.bytes) / 1048576)
            + (devicePeakBytes.isEmpty ? "" : "  (per GPU: "
                + devicePeakBytes.map { String(format: "%.1f", Double($0) / 1048576) }.joined(separator: ", ") + " MiB)"))
        if let gpus {
            lines.append(String(format: "per GPU    %10.1f TFLOP/s", flops / totalSeconds / Double(gpus) / 1e12)
                + (predictedForwardSeconds.map { String(format: "  (simulated forward %.3f ms", $0 * 1e3) } ?? "")
                + (predictedBackwardSeconds.map { String(format: ", backward %.3f ms", $0 * 1e3) } ?? "")
                + (predictedForwardSeconds == nil ? "" : ")"))
        }
        if !ranks.isEmpty {
            lines.append("worker  compute ms  waiting ms  sent MiB  received MiB  peak extra MiB")
            for (rank, s) in ranks.enumerated() {
                lines.append(String(format: "%6d  %10.1f  %10.1f  %8.2f  %12.2f  %14.2f", rank, s.computeSeconds * 1e3,
                                    s.waitSeconds * 1e3, Double(s.bytesSent) / 1048576, Double(s.bytesReceived) / 1048576,
                                    Double(s.peakExtraBytes) / 1048576))
            }
        }
        for check in checks { lines.append("check      " + check.summary) }
        if let passed = checkPassed { lines.append(passed ? "check passed" : "check FAILED") }
        return lines.joined(separator: "\n")
    }

    func jsonText() -> String {
        let p = problem
        var object: [String: Any] = [
            "batch": p.batch, "seq": p.sequence, "heads": p.heads, "kv_heads": p.kvHeads, "head_dim": p.headDim,
            "mask": p.mask.description, "dtype": p.dtype.rawValue, "scale": Double(p.scale),
            "backend": backend, "isa": isa, "threads": workers,
            "forward_ms": forwardSeconds * 1e3, "time_ms": totalSeconds * 1e3,
            "gflops": flops / totalSeconds / 1e9, "peak_memory_bytes": PeakMemory.bytes,
        ]
        if let backwardSeconds { object["backward_ms"] = backwardSeconds * 1e3 }
        if let plan {
            object["plan"] = plan
            object["workers"] = ranks.count
            object["compute_ms_per_rank"] = ranks.map { $0.computeSeconds * 1e3 }
            object["idle_ms_per_rank"] = ranks.map { $0.waitSeconds * 1e3 }
            object["bytes_sent_per_rank"] = ranks.map(\.bytesSent)
            object["bytes_received_per_rank"] = ranks.map(\.bytesReceived)
            object["peak_extra_bytes_per_rank"] = ranks.map(\.peakExtraBytes)
        }
        if let gpus {
            object["gpus"] = gpus
            object["tflops_per_gpu"] = flops / totalSeconds / Double(gpus) / 1e12
            object["device_peak_bytes_per_rank"] = devicePeakBytes
            if let predictedForwardSeconds { object["predicted_forward_ms"] = predictedForwardSeconds * 1e3 }
            if let predictedBackwardSeconds { object["predicted_backward_ms"] = predictedBackwardSeconds * 1e3 }
        }
        if let passed = checkPassed {
            object["check_passed"] = passed
            func finite(_ x: Double) -> Any { x.isFinite ? x : "\(x)" }
            object["max_abs_err"] = Dictionary(uniqueKeysWithValues: checks.map { ($0.name, finite($0.ours.maxAbs)) })
            object["mean_abs_err"] = Dictionary(uniqueKeysWithValues: checks.map { ($0.name, finite($0.ours.meanAbs)) })
            object["tolerance"] = Dictionary(uniqueKeysWithValues: checks.map { ($0.name, finite($0.bound)) })
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Peak resident memory of this process (VmHWM from /proc), 0 where unavailable.
enum PeakMemory {
    static var bytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }
}
