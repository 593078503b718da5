import ArgumentParser
import DistFlashAttn
import Foundation

/// `distflash plan`: shows one plan step by step, verifies it and predicts its time on modelled devices and links
/// (optionally as an SVG Gantt chart), or with `--compare` tabulates every plan over a list of P.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show, verify and simulate a sequence-parallel plan, or compare plans over several P.",
        discussion: """
            Predictions come from a cost model, not a run: each block costs 4·B·D·(visible pairs × heads) FLOPs \
            (backward 2.5×) at the device's sustained FLOP/s; a rank's transfers of one step share its link \
            (latency + bytes / bandwidth per direction); with overlap a step lasts max(compute, communication) on \
            its slowest rank, without it compute + communication. Speedup is over one device running all FLOPs.
            """
    )

    @OptionGroup var problemOptions: ProblemOptions
    @Option(help: "Plan: \(kindNames). With --compare: a comma-separated list (default: all).")
    var plan: String?
    @Option(help: "Workers P (ranks). With --compare: a comma-separated list (default 4,8,16,64,256,1024).")
    var workers: String?
    @Option(help: "Pass: forward or backward.") var pass = "forward"
    @Option(help: "Write an SVG Gantt chart of the simulated plan to this file.") var svg: String?
    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Option(help: "Device model: \(DeviceModel.presets.map(\.name).joined(separator: ", ")).") var device = "h100"
    @Option(help: "Override the device's sustained attention throughput, FLOP/s.") var flops: Double?
    @Option(help: "Link model: \(LinkModel.presets.map(\.name).joined(separator: ", ")).") var link = "nvlink"
    @Option(help: "Override the link bandwidth, bytes/s per direction per rank.") var bandwidth: Double?
    @Option(help: "Override the link latency, seconds per step.") var latency: Double?
    @Flag(name: .customLong("no-overlap"), help: "Communication and compute in sequence (ablation).")
    var noOverlap = false
    @Flag(help: "Tabulate plans × workers instead of showing one plan.") var compare = false
    @Option(name: .customLong("verify-up-to"), help: "With --compare: verify plans only up to this P (slow above).")
    var verifyUpTo = 256

    static let kindNames = Plan.Kind.allCases.map(\.rawValue).joined(separator: ", ")
    static let defaultCompareWorkers = [4, 8, 16, 64, 256, 1024]
    /// `--seq` defaults to 1024, which leaves one token per rank at P = 1024; a comparison over large P uses
    /// 2^17 = 131072 tokens unless `--seq` is given: 128 per rank at P = 1024, and building a
    /// plan costs about P · S row look-ups (2^20 tokens took 15–30 s per plan at P = 1024).
    static let defaultCompareSequence = 1 << 17

    func validate() throws {
        _ = try kinds()
        _ = try workerCounts()
        _ = try parsedPass()
        _ = try simulator()
        if !compare, try kinds().count != 1 || workerCounts().count != 1 {
            throw ValidationError("--plan and --workers take one value each without --compare "
                + "(got --plan \(plan ?? "distflash") --workers \(workers ?? "8"))")
        }
        if compare, svg != nil { throw ValidationError("--svg draws one plan: drop --compare or --svg") }
    }

    func run() throws {
        let problem = try problemOptions.problem(defaultSequence: compare ? Self.defaultCompareSequence : 1024)
        if compare {
            let comparison = try PlanComparison(problem: problem, kinds: kinds(), workers: workerCounts(),
                                                pass: parsedPass(), simulator: simulator(), verifyUpTo: verifyUpTo)
            Swift.print(json ? Self.json(comparison) : comparison.table())
            if comparison.rows.contains(where: { $0.verified == false }) { throw ExitCode(1) }
            return
        }
        let kind = try kinds()[0], ranks = try workerCounts()[0]
        let plan = try Plan.make(kind, problem: problem, ranks: ranks, pass: parsedPass())
        var verification: String?
        do { try plan.verify(problem: problem) } catch { verification = "\(error)" }
        let report = try simulator().simulate(plan, problem: problem)
        if let svg { try Self.writeAtomically(GanttSVG.render(plan: plan, problem: problem, report: report), to: svg) }
        Swift.print(json ? Self.json(plan: plan, problem: problem, report: report, verificationError: verification)
                         : Self.text(plan: plan, problem: problem, report: report, verificationError: verification))
        if verification != nil { throw ExitCode(1) }
    }

    // MARK: Parsing (each throws a message naming the value and what is allowed)

    func kinds() throws -> [Plan.Kind] {
        guard let plan else { return compare ? Plan.Kind.allCases : [.distflash] }
        return try plan.split(separator: ",").map { name in
            guard let kind = Plan.Kind(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--plan '\(name)' is unknown: use one of \(Self.kindNames)")
            }
            return kind
        }
    }

    func workerCounts() throws -> [Int] {
        guard let workers else { return compare ? Self.defaultCompareWorkers : [8] }
        let counts = workers.split(separator: ",", omittingEmptySubsequences: false).map {
            Int($0.trimmingCharacters(in: .whitespaces))
        }
        guard !counts.isEmpty, counts.allSatisfy({ ($0 ?? 0) >= 1 }) else {
            throw ValidationError("--workers '\(workers)': give integers P ≥ 1"
                + (compare ? ", comma separated (e.g. 4,8,16)" : ""))
        }
        return counts.map { $0! }
    }

    func parsedPass() throws -> Plan.Pass {
        guard let value = Plan.Pass(rawValue: pass) else {
            throw ValidationError("--pass '\(pass)' is unknown: use forward or backward")
        }
        return value
    }

    func simulator() throws -> Simulator {
        guard var device = DeviceModel.preset(named: self.device) else {
            throw ValidationError("--device '\(self.device)' is unknown: use one of "
                + DeviceModel.presets.map(\.name).joined(separator: ", "))
        }
        guard var link = LinkModel.preset(named: self.link) else {
            throw ValidationError("--link '\(self.link)' is unknown: use one of "
                + LinkModel.presets.map(\.name).joined(separator: ", "))
        }
        if let flops {
            guard flops > 0, flops.isFinite else { throw ValidationError("--flops \(flops): must be > 0 FLOP/s") }
            device.flopsPerSecond = flops
        }
        if let bandwidth {
            guard bandwidth > 0 else { throw ValidationError("--bandwidth \(bandwidth): must be > 0 bytes/s") }
            link.bandwidth = bandwidth
        }
        if let latency {
            guard latency >= 0, latency.isFinite else { throw ValidationError("--latency \(latency): must be ≥ 0 s") }
            link.latency = latency
        }
        return Simulator(device: device, link: link, overlap: !noOverlap)
    }

    /// Writes `text` to a temporary file next to `path` and renames it into place, so a failed write leaves no file.
    static func writeAtomically(_ text: String, to path: String) throws {
        let target = URL(fileURLWithPath: path)
        let temporary = target.deletingLastPathComponent()
            .appendingPathComponent(".\(target.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        do {
            try Data(text.utf8).write(to: temporary)
            guard rename(temporary.path, target.path) == 0 else {
                throw DistFlashError(.invalidFile, "could not rename to \(path): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw DistFlashError(.invalidFile, "--svg \(path): \(error); check that the folder exists and is writable")
        }
    }
}

// MARK: Output

extension PlanCommand {
    /// The step × rank table (up to P = 16), the verifier's verdict and the simulated figures.
    static func text(plan: Plan, problem: AttentionProblem, report: SimulationReport,
                     verificationError: String?) -> String {
        let p = problem
        var lines = [
            "\(plan), \(plan.layout), \(plan.steps.count) steps",
            "problem   B=\(p.batch) S=\(p.sequence) H=\(p.heads) H_kv=\(p.kvHeads) D=\(p.headDim) \(p.mask) "
                + p.dtype.rawValue,
            "",
        ]
        lines.append(plan.ranks <= 16 ? plan.stepTable() : "(step × rank table shown for P ≤ 16; use --svg)")
        lines.append("")
        lines.append("verified  " + (verificationError.map { "NO: \($0)" } ?? "yes (coverage and data flow)"))
        lines.append("simulated \(report.device), link \(report.link), overlap \(report.overlap ? "on" : "off")")
        lines.append(String(format: "makespan  %@; one device %@ → speedup %.2f× over one device, efficiency %.3f, "
                                + "mean idle %.1f %%", formatDuration(report.makespan),
                            formatDuration(report.singleDeviceSeconds), report.speedup, report.efficiency,
                            report.meanIdleFraction * 100))
        lines.append("rank  compute       link busy     idle %  sent        received    peak extra")
        for (r, rank) in report.ranks.enumerated() {
            let cells = [formatDuration(rank.computeSeconds), formatDuration(rank.communicationSeconds),
                         String(format: "%.1f", rank.idleFraction * 100), formatBytes(rank.bytesSent),
                         formatBytes(rank.bytesReceived), formatBytes(rank.peakExtraBytes)]
            let widths = [12, 12, 6, 10, 10, 0]
            lines.append(String(format: "%4d  ", r)
                + zip(cells, widths).map { $0.padding(toLength: max($1, $0.count), withPad: " ", startingAt: 0) }
                    .joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }

    /// One JSON object; stable keys: verified, predicted_speedup, idle_fraction (mean over ranks),
    /// bytes_sent_per_rank, peak_extra_bytes_per_rank, makespan_s, efficiency, steps, plan, workers, pass.
    static func json(plan: Plan, problem: AttentionProblem, report: SimulationReport,
                     verificationError: String?) -> String {
        var object: [String: Any] = [
            "verified": verificationError == nil,
            "predicted_speedup": report.speedup,
            "idle_fraction": report.meanIdleFraction,
            "bytes_sent_per_rank": report.ranks.map(\.bytesSent),
            "peak_extra_bytes_per_rank": report.ranks.map(\.peakExtraBytes),
            "makespan_s": report.makespan,
            "efficiency": report.efficiency,
            "steps": plan.steps.count,
            "plan": plan.name,
            "workers": plan.ranks,
            "pass": plan.pass.rawValue,
            "layout": plan.layout.kind.rawValue,
            "single_device_s": report.singleDeviceSeconds,
            "bytes_received_per_rank": report.ranks.map(\.bytesReceived),
            "compute_s_per_rank": report.ranks.map(\.computeSeconds),
            "idle_fraction_per_rank": report.ranks.map(\.idleFraction),
            "step_s": report.steps.map(\.duration),
            "batch": problem.batch, "seq": problem.sequence, "heads": problem.heads, "kv_heads": problem.kvHeads,
            "head_dim": problem.headDim, "mask": problem.mask.description, "dtype": problem.dtype.rawValue,
            "device": report.device.name, "device_flops": report.device.flopsPerSecond,
            "link": report.link.name, "bandwidth": report.link.bandwidth, "latency_s": report.link.latency,
            "overlap": report.overlap,
        ]
        if let verificationError { object["verify_error"] = verificationError }
        return serialise(object)
    }

    /// The comparison as one JSON object: problem and model fields plus `rows`.
    static func json(_ comparison: PlanComparison) -> String {
        let p = comparison.problem, model = comparison.simulator
        let rows: [[String: Any]] = comparison.rows.map { row in
            var object: [String: Any] = [
                "plan": row.kind.rawValue, "workers": row.workers, "steps": row.steps,
                "predicted_speedup": row.speedup, "efficiency": row.efficiency, "idle_fraction": row.meanIdleFraction,
                "max_bytes_sent_per_rank": row.maxBytesSent, "max_peak_extra_bytes_per_rank": row.maxPeakExtraBytes,
            ]
            object["verified"] = row.verified ?? NSNull()
            if let error = row.error { object["error"] = error }
            if let skipped = row.skipped { object["skipped"] = skipped }
            return object
        }
        return serialise([
            "pass": comparison.pass.rawValue, "batch": p.batch, "seq": p.sequence, "heads": p.heads,
            "kv_heads": p.kvHeads, "head_dim": p.headDim, "mask": p.mask.description, "dtype": p.dtype.rawValue,
            "device": model.device.name, "device_flops": model.device.flopsPerSecond, "link": model.link.name,
            "bandwidth": model.link.bandwidth, "latency_s": model.link.latency, "overlap": model.overlap,
            "verify_up_to": comparison.verifyUpTo, "rows": rows,
        ])
    }

    /// Sorted-key JSON; infinite numbers (the ideal link) become strings, which JSON cannot hold as numbers.
    private static func serialise(_ object: [String: Any]) -> String {
        func finite(_ value: Any) -> Any {
            if let number = value as? Double, !number.isFinite { return "\(number)" }
            if let list = value as? [Any] { return list.map(finite) }
            if let dictionary = value as? [String: Any] { return dictionary.mapValues(finite) }
            return value
        }
        let data = try! JSONSerialization.data(withJSONObject: finite(object), options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
