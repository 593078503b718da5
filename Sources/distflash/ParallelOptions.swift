import ArgumentParser
import DistFlashAttn
import Foundation

extension Plan.Kind: ExpressibleByArgument {}

/// Flags that spread one attention over P CPU workers (threads of this process) following a plan.
struct ParallelOptions: ParsableArguments {
    @Option(help: "CPU workers P (ranks, each with its shard of the sequence); 1 = single device.")
    var workers = 1
    @Option(help: "Plan: \(Plan.Kind.allCases.map(\.rawValue).joined(separator: ", ")) (default distflash when --workers > 1).")
    var plan: Plan.Kind?
    @Flag(name: .customLong("no-overlap"), help: "Finish each step's communication before computing (ablation).")
    var noOverlap = false
    @Option(name: .customLong("link-bandwidth"), help: "Simulated link bandwidth per worker, bytes/s (default: memory speed).")
    var linkBandwidth: Double?
    @Option(name: .customLong("link-latency"), help: "Simulated link latency, seconds.")
    var linkLatency = 0.0
    @Option(help: "Seconds a worker may wait for a message before the run fails.")
    var timeout = 60.0
    @Option(name: .customLong("fail-rank"), help: "Debug: this worker fails on purpose (with --fail-step).")
    var failRank: Int?
    @Option(name: .customLong("fail-step"), help: "Debug: the forward step at which --fail-rank fails.")
    var failStep = 0

    var isDistributed: Bool { workers > 1 || plan != nil }

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers \(workers): must be ≥ 1") }
        if let bandwidth = linkBandwidth, !(bandwidth > 0) {
            throw ValidationError("--link-bandwidth \(bandwidth): must be > 0 bytes/s")
        }
        guard linkLatency >= 0 else { throw ValidationError("--link-latency \(linkLatency): must be ≥ 0 s") }
        guard timeout > 0 else { throw ValidationError("--timeout \(timeout): must be > 0 s") }
    }

    /// `--fail-rank` must name one of the run's `ranks` (the workers, or the GPUs with `--gpus`).
    func validateFailRank(ranks: Int) throws {
        if let rank = failRank, !(0..<ranks).contains(rank) {
            throw ValidationError("--fail-rank \(rank): must be a rank index in 0..<\(ranks)")
        }
    }

    var distributed: DistributedAttention {
        var run = DistributedAttention(plan: plan ?? .distflash, ranks: workers)
        run.overlap = !noOverlap
        run.timeout = timeout
        run.link = linkBandwidth.map { LinkModel(name: "simulated", bandwidth: $0, latency: linkLatency) }
        run.failure = failRank.map { (rank: $0, step: failStep) }
        return run
    }
}
