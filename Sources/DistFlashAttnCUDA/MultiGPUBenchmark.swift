import DistFlashAttn
import Foundation

extension MultiGPUAttention {
    /// What the benchmark of one problem measured: median seconds of the forward and of the backward over all
    /// GPUs (from the first rank's start to the last rank's end, shards already in place), and each rank's figures
    /// from the median forward and backward runs.
    public struct Timing: Sendable {
        public var forward: Double
        public var backward: Double
        public var forwardStatistics: [RankStatistics]
        public var backwardStatistics: [RankStatistics]
        public var devicePeakBytes: [Int]
        /// The plans that ran (for the simulator's prediction of the same run).
        public var forwardPlan: Plan
        public var backwardPlan: Plan
    }

    /// Times the distributed forward and backward of `problem` on random bf16 inputs generated on the GPUs (no
    /// host copies), after one warm-up run.
    public func benchmark(_ problem: AttentionProblem, repeats: Int) throws -> Timing {
        let (forwardPlan, backwardPlan) = (try run.gpuPlan(problem, .forward, inputs: communicator.inputs),
                                           try run.gpuPlan(problem, .backward, inputs: communicator.inputs))
        let layout = forwardPlan.layout
        let inputs = try blocks.indices.map { rank -> [ShardTensor: DeviceTensor] in
            let n = layout.count(rank: rank)
            let (b, h, hkv, d) = (problem.batch, problem.heads, problem.kvHeads, problem.headDim)
            let seed = UInt32(rank * 4)
            return [.query: try blocks[rank].random([b, n, h, d], seed: seed),
                    .key: try blocks[rank].random([b, n, hkv, d], seed: seed + 1),
                    .value: try blocks[rank].random([b, n, hkv, d], seed: seed + 2),
                    .outputGrad: try blocks[rank].random([b, n, h, d], seed: seed + 3)]
        }
        // Only each run's times and figures are kept (its outputs go before the next run), and each GPU's peak
        // memory is the largest of any single run's.
        var forwards: [(seconds: Double, statistics: [RankStatistics])] = []
        var backwards: [(seconds: Double, statistics: [RankStatistics])] = []
        var peaks = [Int](repeating: 0, count: blocks.count)
        for _ in 0...max(1, repeats) {
            for rank in blocks.indices {
                _ = try blocks[rank].finish()
                _ = try blocks[rank].device.peakMemoryBytes(reset: true)
            }
            let forward = try run.run(forwardPlan, problem, backends: { blocks[$0] }, communicator: communicator) {
                [.query: inputs[$0][.query]!, .key: inputs[$0][.key]!, .value: inputs[$0][.value]!]
            }
            let backward = try run.run(backwardPlan, problem, backends: { blocks[$0] }, communicator: communicator) {
                var shards = inputs[$0]
                (shards[.output], shards[.logSumExp]) = (forward.value[$0][.output]!, forward.value[$0][.logSumExp]!)
                return shards
            }
            forwards.append((forward.seconds, forward.statistics))
            backwards.append((backward.seconds, backward.statistics))
            peaks = try zip(peaks, blocks).map { max($0, try $1.device.peakMemoryBytes()) }
        }
        // Run 0 warms up (kernel compilation, the allocator's pool).
        let forward = forwards.dropFirst().sorted { $0.seconds < $1.seconds }[(forwards.count - 1) / 2]
        let backward = backwards.dropFirst().sorted { $0.seconds < $1.seconds }[(backwards.count - 1) / 2]
        return Timing(forward: forward.seconds, backward: backward.seconds, forwardStatistics: forward.statistics,
                      backwardStatistics: backward.statistics, devicePeakBytes: peaks, forwardPlan: forwardPlan,
                      backwardPlan: backwardPlan)
    }

    /// Median seconds for rank 0 to send `bytes` to rank 1 (and rank 1 to receive them): the link figure the
    /// simulator's model is fitted with.
    public func transferSeconds(bytes: Int, repeats: Int) throws -> Double {
        guard run.ranks >= 2 else { throw DistFlashError(.runtime, "a transfer needs two GPUs, this run has \(run.ranks)") }
        let count = bytes / 4
        let payload = try blocks[0].filled([count], with: 1, like: nil)
        var times: [Double] = []
        for _ in 0...max(1, repeats) {
            let clock = ContinuousClock.now
            _ = try RankThreads.run(ranks: 2, communicator: communicator, what: "transfer of \(bytes) bytes") { rank in
                if rank == 0 {
                    _ = try communicator.exchange(Exchange(sends: [.init(to: 1, tag: 0, payload: [payload])]), rank: 0)
                } else {
                    _ = try communicator.exchange(Exchange(receives: [.init(from: 0, tag: 0, shapes: [[count]])]), rank: 1)
                }
                return 0
            }
            times.append((ContinuousClock.now - clock).seconds)
        }
        return times.dropFirst().sorted()[(times.count - 1) / 2]
    }
}
