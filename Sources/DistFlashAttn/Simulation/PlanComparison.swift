import Foundation

/// Every chosen plan simulated for every chosen P on one problem: the figures `distflash plan --compare` prints.
public struct PlanComparison: Sendable {
    public struct Row: Sendable {
        public var kind: Plan.Kind
        public var workers: Int
        public var steps: Int
        public var speedup: Double
        public var efficiency: Double
        public var meanIdleFraction: Double
        /// Largest over ranks.
        public var maxBytesSent: Int
        /// Largest over ranks.
        public var maxPeakExtraBytes: Int
        /// true, false, or nil when verification was skipped (P above the limit).
        public var verified: Bool?
        /// The verifier's or builder's message when something failed.
        public var error: String?
        /// Why the plan was not built, when it was not (Ulysses with P > H).
        public var skipped: String?
    }

    public var problem: AttentionProblem
    public var simulator: Simulator
    public var pass: Plan.Pass
    /// Plans with more ranks than this were not verified.
    public var verifyUpTo: Int
    public var rows: [Row]

    /// Builds, verifies (P ≤ `verifyUpTo`) and simulates each plan. A plan that cannot be built becomes a row with
    /// its error and zero figures. Ulysses is skipped for P > H: it parallelises over heads, so ranks beyond H
    /// would only idle, and its H·P²/2 block tasks would make the table slow at P = 1024.
    public init(problem: AttentionProblem, kinds: [Plan.Kind], workers: [Int], pass: Plan.Pass,
                simulator: Simulator, verifyUpTo: Int) {
        self.problem = problem
        self.simulator = simulator
        self.pass = pass
        self.verifyUpTo = verifyUpTo
        self.rows = kinds.flatMap { kind in
            workers.map { p in
                var row = Row(kind: kind, workers: p, steps: 0, speedup: 0, efficiency: 0, meanIdleFraction: 0,
                              maxBytesSent: 0, maxPeakExtraBytes: 0, verified: nil, error: nil, skipped: nil)
                if kind == .ulysses && p > problem.heads {
                    row.skipped = "P > H = \(problem.heads)"
                    return row
                }
                do {
                    let plan = try Plan.make(kind, problem: problem, ranks: p, pass: pass)
                    if p <= verifyUpTo {
                        do {
                            try plan.verify(problem: problem)
                            row.verified = true
                        } catch {
                            row.verified = false
                            row.error = "\(error)"
                        }
                    }
                    let report = simulator.simulate(plan, problem: problem)
                    row.steps = plan.steps.count
                    row.speedup = report.speedup
                    row.efficiency = report.efficiency
                    row.meanIdleFraction = report.meanIdleFraction
                    row.maxBytesSent = report.ranks.map(\.bytesSent).max() ?? 0
                    row.maxPeakExtraBytes = report.ranks.map(\.peakExtraBytes).max() ?? 0
                } catch {
                    row.verified = false
                    row.error = "\(error)"
                }
                return row
            }
        }
    }

    /// A markdown table, one line per plan × P, with a header naming the problem and the models.
    public func table() -> String {
        let p = problem
        var lines = [
            "\(pass.rawValue) pass, B=\(p.batch) S=\(p.sequence) H=\(p.heads) H_kv=\(p.kvHeads) D=\(p.headDim) "
                + "\(p.mask) \(p.dtype.rawValue); device \(simulator.device); link \(simulator.link); "
                + "overlap \(simulator.overlap ? "on" : "off")",
            "",
            "| plan | P | steps | speedup vs 1 device | efficiency | idle % | max sent/rank | max peak extra/rank | verified |",
            "|:--|--:|--:|--:|--:|--:|--:|--:|:--|",
        ]
        for row in rows {
            if let skipped = row.skipped {
                lines.append("| \(row.kind.rawValue) | \(row.workers) | – | not run: \(skipped) | | | | | |")
                continue
            }
            let verified = row.verified.map { $0 ? "yes" : "NO" } ?? "skipped (P > \(verifyUpTo))"
            lines.append("| \(row.kind.rawValue) | \(row.workers) | \(row.steps) | "
                + String(format: "%.2f× | %.3f | %.1f", row.speedup, row.efficiency, row.meanIdleFraction * 100)
                + " | \(formatBytes(row.maxBytesSent)) | \(formatBytes(row.maxPeakExtraBytes)) | \(verified) |")
        }
        for row in rows where row.error != nil {
            lines.append("- \(row.kind.rawValue), P = \(row.workers): \(row.error!)")
        }
        return lines.joined(separator: "\n")
    }
}

/// Bytes in B, KiB, MiB or GiB, three significant digits.
public func formatBytes(_ bytes: Int) -> String {
    let value = Double(bytes)
    for (scale, unit) in [(1073741824.0, "GiB"), (1048576.0, "MiB"), (1024.0, "KiB")] where value >= scale {
        return "\(trimmed(value / scale)) \(unit)"
    }
    return "\(bytes) B"
}
