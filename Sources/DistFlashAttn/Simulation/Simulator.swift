/// Predicts how long a plan takes on `workers` identical devices joined by identical links, from the plan's data
/// alone. Per step t and rank r:
/// ```
/// compute(r, t)  = Σ over r's tasks of  4 · B · D · work / device FLOP/s  (× 2.5 backward)
///                  (work = visible (query, key, head) pairs per batch element, so this is 4·B·H·D per pair)
/// send(r, t)     = latency + Σ bytes r posts at t / bandwidth      (0 if none)
/// recv(r, t)     = latency + Σ bytes posted to r at t / bandwidth  (0 if none)
/// comm(r, t)     = max(send, recv)                                  (full-duplex link)
/// busy(r, t)     = max(compute, comm)     with overlap: transfers posted at t run while t computes
///                = comm + compute         without: the step's transfers finish, then the blocks run
/// duration(t)    = max over r of busy(r, t)       every rank waits at the step boundary, because data posted
///                                                 at t is needed at t + 1
/// ```
/// A transfer is thus never slower than the slower of its sender's and receiver's shares, which both bound the
/// step. Merging received partials into the owner's accumulator is not modelled: it touches rows · H · (D + 1)
/// values per merge, against rows · keys · H · D for the block that produced them, i.e. S/P times less.
///
/// Ideal case (infinite bandwidth, zero latency, causal, n = S/P tokens per rank, block units of n² pairs with the
/// diagonal n(n+1)/2, total (Pn)(Pn+1)/2):
/// ```
/// ring        makespan n(n+1)/2 + (P−1)·n²  → speedup P(Pn+1)/((2P−1)n+1) → P²/(2P−1), efficiency → P/(2P−1) → ½
/// distflash   makespan n(n+1)/2 + (P−1)·n²/2 (odd P; even P with the last-round split, n even)  → speedup P
/// ```
/// The paper counts the diagonal as a full block (ring P(P+1)/2 units in P steps: efficiency (P+1)/(2P), 4.5× at
/// P = 8; fold without split 36/5 = 7.2×); counting visible pairs halves the diagonal, giving 64/15 ≈ 4.27× for
/// the ring and exactly 8× for the fold with the split at P = 8.
public struct Simulator: Sendable {
    public var device: DeviceModel
    public var link: LinkModel
    /// Whether a step's transfers run while its blocks compute.
    public var overlap: Bool

    public init(device: DeviceModel = .h100, link: LinkModel = .nvlink, overlap: Bool = true) {
        self.device = device
        self.link = link
        self.overlap = overlap
    }

    /// FLOPs of one task: 4·B·D·work forward, 2.5× that backward.
    public static func flops(of task: Plan.BlockTask, problem: AttentionProblem, pass: Plan.Pass) -> Double {
        4 * Double(problem.batch) * Double(problem.headDim) * Double(task.work) * (pass == .backward ? 2.5 : 1)
    }

    /// Simulates `plan` for `problem` (the problem the plan was built for).
    public func simulate(_ plan: Plan, problem: AttentionProblem) -> SimulationReport {
        let p = plan.ranks
        var ranks = [SimulationReport.Rank](repeating: .init(), count: p)
        var steps: [SimulationReport.Interval] = []
        var taskTimes: [[SimulationReport.Interval]] = []
        var transferTimes: [[SimulationReport.Interval]] = []
        var clock = 0.0

        for step in plan.steps {
            var compute = [Double](repeating: 0, count: p)
            var sent = [Int](repeating: 0, count: p), received = [Int](repeating: 0, count: p)
            for task in step.tasks { compute[task.rank] += Self.flops(of: task, problem: problem, pass: plan.pass) }
            for transfer in step.transfers {
                let bytes = transfer.bytes(problem: problem)
                sent[transfer.from] += bytes
                received[transfer.to] += bytes
            }
            var duration = 0.0
            var computeStart = [Double](repeating: clock, count: p)
            for r in 0..<p {
                compute[r] /= device.flopsPerSecond
                let comm = max(link.seconds(bytes: sent[r]), link.seconds(bytes: received[r]))
                if !overlap { computeStart[r] += comm }
                duration = max(duration, overlap ? max(compute[r], comm) : compute[r] + comm)
                ranks[r].computeSeconds += compute[r]
                ranks[r].communicationSeconds += comm
                ranks[r].bytesSent += sent[r]
                ranks[r].bytesReceived += received[r]
            }

            // Each rank runs its tasks back to back and sends in plan order on its outgoing link.
            var computeClock = computeStart
            taskTimes.append(step.tasks.map { task in
                let start = computeClock[task.rank]
                computeClock[task.rank] += Self.flops(of: task, problem: problem, pass: plan.pass) / device.flopsPerSecond
                return .init(start: start, end: computeClock[task.rank])
            })
            var linkBytes = [Int](repeating: 0, count: p)
            transferTimes.append(step.transfers.map { transfer in
                let before = linkBytes[transfer.from]
                linkBytes[transfer.from] += transfer.bytes(problem: problem)
                let start = before == 0 ? clock : clock + link.seconds(bytes: before)
                return .init(start: start, end: clock + link.seconds(bytes: linkBytes[transfer.from]))
            })
            steps.append(.init(start: clock, end: clock + duration))
            clock += duration
        }

        let extra = plan.extraMemory(problem: problem)
        for r in 0..<p {
            ranks[r].idleFraction = clock > 0 ? 1 - ranks[r].computeSeconds / clock : 0
            ranks[r].peakExtraBytes = extra[r].max() ?? 0
        }
        let factor = plan.pass == .backward ? 2.5 : 1
        return SimulationReport(plan: plan.name, pass: plan.pass, workers: p, device: device, link: link,
                                overlap: overlap, steps: steps, tasks: taskTimes, transfers: transferTimes,
                                ranks: ranks, singleDeviceSeconds: problem.forwardFLOPs * factor / device.flopsPerSecond)
    }
}
