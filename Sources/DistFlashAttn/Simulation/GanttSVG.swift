import Foundation

/// An SVG Gantt chart of a simulated plan, as plain text (no dependencies):
/// ```
///  title: plan · pass · P · mask, makespan, speedup
///  legend
///  rank 0  [■■ own ■■][▓▓ helper ▓▓][      idle      ]     ← compute lane (grey = idle)
///          [=K/V=]      [=Q=]                               ← sends lane, coloured by Transfer.Content
///  rank 1  ...
///          |        |        |                              ← faint lines at step boundaries; time axis below
/// ```
/// Rows shrink with P so the chart stays about 700 px tall; labels and tooltips are dropped where they would not
/// fit or would bloat the file (tooltips up to P = 64). Every task and transfer is drawn (at least half a pixel
/// wide), so the file grows with the plan's size.
public enum GanttSVG {
    static let width = 1200.0
    static let left = 80.0, right = 20.0, top = 100.0
    static let ownColour = "#4c72b0", helperColour = "#dd8452", idleColour = "#eeeeee"

    /// Colour of a transfer's content in the sends lane.
    static func colour(_ content: Plan.Transfer.Content) -> String {
        switch content {
        case .keyValue: return "#55a868"
        case .query: return "#8172b3"
        case .backwardInputs: return "#937860"
        case .partialOutput: return "#c44e52"
        case .queryGradient: return "#da8bc3"
        case .keyValueGradient: return "#ccb974"
        }
    }

    /// The chart of `plan` (built for `problem`) as simulated in `report`.
    public static func render(plan: Plan, problem: AttentionProblem, report: SimulationReport) -> String {
        let p = max(plan.ranks, 1)
        let row = min(32, max(2, 640 / Double(p)))
        let computeHeight = row * 0.6, sendHeight = row * 0.22
        let plotWidth = width - left - right
        let bottom = top + row * Double(p)
        let height = bottom + 40
        let makespan = report.makespan
        let scale = makespan > 0 ? plotWidth / makespan : 0
        func x(_ time: Double) -> Double { left + time * scale }
        func rowTop(_ rank: Int) -> Double { top + row * Double(rank) }

        var svg = [
            #"<?xml version="1.0" encoding="UTF-8"?>"#,
            #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(f(width))" height="\#(f(height))" "#
                + #"viewBox="0 0 \#(f(width)) \#(f(height))" font-family="sans-serif">"#,
            #"<rect width="100%" height="100%" fill="white"/>"#,
        ]
        let title = "\(plan.name) · \(plan.pass.rawValue) · P = \(plan.ranks) · \(problem.mask) — makespan "
            + "\(formatDuration(makespan)), speedup \(trimmed(report.speedup))× over one device "
            + "(efficiency \(Int((report.efficiency * 100).rounded())) %)"
        let subtitle = "B=\(problem.batch) S=\(problem.sequence) H=\(problem.heads) H_kv=\(problem.kvHeads) "
            + "D=\(problem.headDim) \(problem.dtype.rawValue) · device \(report.device) · link \(report.link) · "
            + "overlap \(report.overlap ? "on" : "off")"
        svg.append(text(title, x: 12, y: 24, size: 16, weight: "bold"))
        svg.append(text(subtitle, x: 12, y: 44, size: 12))
        svg.append(legend(contents: Plan.Transfer.Content.allCases.filter { $0.occurs(in: plan.pass) }, y: 58))

        // Lanes: grey background, so idle time shows as empty.
        let labelEvery = max(1, Int((12 / row).rounded(.up)))
        for r in 0..<plan.ranks {
            svg.append(rect(x: left, y: rowTop(r), width: plotWidth, height: computeHeight, fill: idleColour))
            svg.append(rect(x: left, y: rowTop(r) + computeHeight, width: plotWidth, height: sendHeight,
                            fill: "#f7f7f7"))
            if r % labelEvery == 0 {
                svg.append(text("rank \(r)", x: left - 6, y: rowTop(r) + min(computeHeight, 12),
                                size: min(12, max(7, row * 0.6)), anchor: "end"))
            }
        }

        // Step boundaries, labelled where a step is wide enough.
        for (t, step) in report.steps.enumerated() {
            svg.append(line(x: x(step.start), from: top - 6, to: bottom, colour: "#888", opacity: 0.35, width: 0.5))
            if step.duration * scale >= 28 {
                svg.append(text("t=\(t)", x: x(step.start) + 3, y: top - 8, size: 10, fill: "#666"))
            }
        }
        svg.append(line(x: x(makespan), from: top - 6, to: bottom, colour: "#888", opacity: 0.35, width: 0.5))

        let tooltips = plan.ranks <= 64
        for (t, step) in plan.steps.enumerated() {
            for (task, time) in zip(step.tasks, report.tasks[t]) {
                let tip = tooltips ? "step \(t), rank \(task.rank): \(task) — \(formatDuration(time.duration))" : nil
                svg.append(rect(x: x(time.start), y: rowTop(task.rank), width: time.duration * scale,
                                height: computeHeight, fill: task.queryShard == task.rank ? ownColour : helperColour,
                                separated: true, tooltip: tip))
            }
            for (transfer, time) in zip(step.transfers, report.transfers[t]) {
                let tip = tooltips ? "step \(t): \(transfer) — \(formatDuration(time.duration))" : nil
                svg.append(rect(x: x(time.start), y: rowTop(transfer.from) + computeHeight,
                                width: time.duration * scale, height: sendHeight, fill: colour(transfer.content),
                                separated: true, tooltip: tip))
            }
        }

        // Time axis.
        svg.append(#"<line x1="\#(f(left))" y1="\#(f(bottom + 2))" x2="\#(f(left + plotWidth))" "#
            + #"y2="\#(f(bottom + 2))" stroke="black" stroke-width="0.8"/>"#)
        for tick in ticks(upTo: makespan) {
            svg.append(line(x: x(tick), from: bottom + 2, to: bottom + 6, colour: "black", opacity: 1, width: 0.8))
            svg.append(text(formatDuration(tick), x: x(tick), y: bottom + 18, size: 10, anchor: "middle"))
        }
        svg.append("</svg>")
        return svg.joined(separator: "\n") + "\n"
    }

    /// Swatches for block kinds, idle time and each transfer content of the pass.
    static func legend(contents: [Plan.Transfer.Content], y: Double) -> String {
        var items = [("own-query block", ownColour), ("helper block (another rank's queries)", helperColour),
                     ("idle", idleColour)]
        items += contents.map { ("send: \($0.rawValue)", colour($0)) }
        var parts: [String] = []
        var cursor = 12.0, line = y
        for (label, fill) in items {
            let itemWidth = 22 + Double(label.count) * 6.2
            if cursor + itemWidth > width - right {
                cursor = 12
                line += 16
            }
            parts.append(rect(x: cursor, y: line, width: 14, height: 10, fill: fill, stroke: "#999"))
            parts.append(text(label, x: cursor + 18, y: line + 9, size: 11))
            cursor += itemWidth
        }
        return parts.joined(separator: "\n")
    }

    /// Round tick positions (1, 2 or 5 × 10^k apart), about eight over `0…end`.
    static func ticks(upTo end: Double) -> [Double] {
        guard end > 0, end.isFinite else { return [] }
        let rough = end / 8, magnitude = pow(10, floor(log10(rough)))
        let spacing = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        return (0...Int(end / spacing)).map { Double($0) * spacing }
    }

    /// A vertical line at `x` from `y1` to `y2`.
    static func line(x: Double, from y1: Double, to y2: Double, colour: String, opacity: Double,
                     width: Double) -> String {
        "<line x1=\"\(f(x))\" y1=\"\(f(y1))\" x2=\"\(f(x))\" y2=\"\(f(y2))\" stroke=\"\(colour)\" "
            + "stroke-opacity=\"\(f(opacity))\" stroke-width=\"\(f(width))\"/>"
    }

    static func rect(x: Double, y: Double, width: Double, height: Double, fill: String, stroke: String? = nil,
                     separated: Bool = false, tooltip: String? = nil) -> String {
        // Half a pixel at least, so instantaneous work still shows; a white edge separates adjacent wide boxes.
        let drawn = max(width, 0.5)
        var attributes = #"x="\#(f(x))" y="\#(f(y))" width="\#(f(drawn))" height="\#(f(height))" fill="\#(fill)""#
        if let stroke { attributes += #" stroke="\#(stroke)" stroke-width="0.5""# }
        else if separated && drawn >= 4 { attributes += #" stroke="white" stroke-width="0.5""# }
        guard let tooltip else { return "<rect \(attributes)/>" }
        return "<rect \(attributes)><title>\(escape(tooltip))</title></rect>"
    }

    static func text(_ content: String, x: Double, y: Double, size: Double, weight: String? = nil,
                     anchor: String? = nil, fill: String = "#222") -> String {
        var attributes = #"x="\#(f(x))" y="\#(f(y))" font-size="\#(f(size))" fill="\#(fill)""#
        if let weight { attributes += #" font-weight="\#(weight)""# }
        if let anchor { attributes += #" text-anchor="\#(anchor)""# }
        return "<text \(attributes)>\(escape(content))</text>"
    }

    /// Text safe inside XML character data and attribute values.
    public static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// A coordinate with two decimals.
    static func f(_ value: Double) -> String { String(format: "%.2f", value) }
}
