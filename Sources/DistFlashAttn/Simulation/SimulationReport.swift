/// What the simulator predicts for one plan: the timeline (for drawing) and the per-rank figures.
///
/// ```
/// makespan          Σ_t step duration_t                                   seconds
/// idle fraction_r   1 − compute_r / makespan                              (waiting, or no work)
/// speedup           single-device time / makespan,  single-device time = total FLOPs / device FLOP/s
/// efficiency        speedup / P
/// ```
public struct SimulationReport: Sendable, Equatable {
    /// A span of simulated time, seconds from the start of the plan.
    public struct Interval: Sendable, Equatable {
        public var start: Double
        public var end: Double

        public init(start: Double, end: Double) {
            self.start = start
            self.end = end
        }

        public var duration: Double { end - start }
    }

    /// One rank's figures over the whole plan.
    public struct Rank: Sendable, Equatable {
        /// Seconds computing blocks.
        public var computeSeconds = 0.0
        /// Seconds its busier link direction is in use (summed over steps).
        public var communicationSeconds = 0.0
        /// 1 − compute / makespan.
        public var idleFraction = 0.0
        public var bytesSent = 0
        public var bytesReceived = 0
        /// Most bytes held at once beyond the rank's own shard: received inputs, received results awaiting their
        /// merge, and results accumulated for other ranks' shards (see `Plan.extraMemory`).
        public var peakExtraBytes = 0

        public init() {}
    }

    public var plan: String
    public var pass: Plan.Pass
    /// P
    public var workers: Int
    public var device: DeviceModel
    public var link: LinkModel
    public var overlap: Bool
    /// Start and end of each step; the steps tile `0…makespan`.
    public var steps: [Interval]
    /// `[step][task]`: when each of `plan.steps[step].tasks` runs on its rank.
    public var tasks: [[Interval]]
    /// `[step][transfer]`: when each of `plan.steps[step].transfers` occupies its sender's outgoing link.
    public var transfers: [[Interval]]
    public var ranks: [Rank]
    /// Time of the whole pass on one device (all FLOPs at the device's rate, no communication).
    public var singleDeviceSeconds: Double

    public init(plan: String, pass: Plan.Pass, workers: Int, device: DeviceModel, link: LinkModel, overlap: Bool,
                steps: [Interval], tasks: [[Interval]], transfers: [[Interval]], ranks: [Rank],
                singleDeviceSeconds: Double) {
        self.plan = plan
        self.pass = pass
        self.workers = workers
        self.device = device
        self.link = link
        self.overlap = overlap
        self.steps = steps
        self.tasks = tasks
        self.transfers = transfers
        self.ranks = ranks
        self.singleDeviceSeconds = singleDeviceSeconds
    }

    /// Seconds from the first step's start to the last step's end.
    public var makespan: Double { steps.last?.end ?? 0 }

    /// Single-device time over makespan (P when perfectly balanced with free communication).
    public var speedup: Double { makespan > 0 ? singleDeviceSeconds / makespan : 0 }

    /// Speedup per rank, 1 at best.
    public var efficiency: Double { speedup / Double(max(workers, 1)) }

    /// Idle fraction averaged over ranks; equals 1 − efficiency (both count only block compute as useful).
    public var meanIdleFraction: Double {
        ranks.isEmpty ? 0 : ranks.reduce(0) { $0 + $1.idleFraction } / Double(ranks.count)
    }
}
