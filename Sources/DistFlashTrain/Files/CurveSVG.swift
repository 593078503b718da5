import DistFlashAttn
import Foundation

/// One logged point of a training run. `accuracy` ∈ [0, 1] where the task measures one (recall), else nil.
public struct CurvePoint: Sendable, Equatable {
    public var step: Int
    public var loss: Double
    public var accuracy: Double?

    public init(step: Int, loss: Double, accuracy: Double? = nil) {
        (self.step, self.loss, self.accuracy) = (step, loss, accuracy)
    }
}

/// Loss and accuracy against step as a small standalone SVG (no dependencies):
/// ```
///                         title                      ── loss  ── accuracy
///  loss ┤╲                                ╭───────────┤ 100 %
///       ┤ ╲__                       _____╱            ┤       loss: blue, left axis from 0
///       ┤    ‾‾──____         _____╱                  ┤       accuracy: orange, right axis 0–100 %
///       ┤ chance - - ‾‾‾‾‾‾‾╱‾‾‾‾‾‾ - - - - - - - - - ┤       chance: optional dashed line
///       └──┬───────┬───────┬───────┬───────┬───────┬──┘ 0 %
///                            step
/// ```
/// The loss axis (losses ≥ 0) runs from 0 to a round number at or above the largest finite loss; points with a
/// non-finite loss (a diverged step) are left out of the line. The accuracy axis appears only if some point has an
/// accuracy.
public enum CurveSVG {
    static let width = 720.0, height = 420.0
    static let left = 64.0, right = 64.0, top = 56.0, bottom = 52.0
    static let lossColour = "#4c72b0", accuracyColour = "#dd8452"

    /// The chart of `points` (in step order) under `title`; `chanceAccuracy` ∈ [0, 1] draws a dashed reference
    /// line on the accuracy axis.
    public static func render(_ points: [CurvePoint], title: String, chanceAccuracy: Double? = nil) -> String {
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let firstStep = Double(points.map(\.step).min() ?? 0)
        let lastStep = max(Double(points.map(\.step).max() ?? 1), firstStep + 1)
        let finiteLosses = points.map(\.loss).filter(\.isFinite)
        let stepSpacing = spacing(lastStep - firstStep)
        let stepTicks = stride(from: (firstStep / stepSpacing).rounded(.up) * stepSpacing, through: lastStep,
                               by: stepSpacing).map { $0 }
        let largestLoss = finiteLosses.max().flatMap { $0 > 0 ? $0 : nil } ?? 1
        let lossSpacing = spacing(largestLoss)
        let lossTop = (largestLoss / lossSpacing).rounded(.up) * lossSpacing
        let lossTicks = (0...Int((lossTop / lossSpacing).rounded())).map { Double($0) * lossSpacing }
        let showsAccuracy = points.contains { $0.accuracy != nil }

        func x(_ step: Double) -> Double { left + (step - firstStep) / (lastStep - firstStep) * plotWidth }
        func yLoss(_ loss: Double) -> Double { top + plotHeight * (1 - loss / lossTop) }
        func yAccuracy(_ accuracy: Double) -> Double { top + plotHeight * (1 - accuracy) }

        var svg = [
            #"<?xml version="1.0" encoding="UTF-8"?>"#,
            #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(f(width))" height="\#(f(height))" "#
                + #"viewBox="0 0 \#(f(width)) \#(f(height))" font-family="sans-serif">"#,
            #"<rect width="100%" height="100%" fill="white"/>"#,
            text(title, x: width / 2, y: 24, size: 15, anchor: "middle", weight: "bold"),
            #"<rect x="\#(f(left))" y="\#(f(top))" width="\#(f(plotWidth))" height="\#(f(plotHeight))" "#
                + ##"fill="none" stroke="#222" stroke-width="0.8"/>"##,
        ]

        // Axes: steps below, loss on the left, accuracy (0–100 %) on the right.
        let plotBottom = top + plotHeight
        for step in stepTicks {
            svg.append(line(x(step), plotBottom, x(step), plotBottom + 5))
            svg.append(text(label(step), x: x(step), y: plotBottom + 18, size: 11, anchor: "middle"))
        }
        svg.append(text("step", x: left + plotWidth / 2, y: height - 12, size: 12, anchor: "middle"))
        for loss in lossTicks {
            svg.append(line(left - 5, yLoss(loss), left, yLoss(loss)))
            svg.append(text(label(loss), x: left - 8, y: yLoss(loss) + 4, size: 11, anchor: "end"))
        }
        svg.append(text("loss", x: 16, y: top + plotHeight / 2, size: 12, anchor: "middle", fill: lossColour,
                        rotate: true))
        if showsAccuracy {
            let plotRight = left + plotWidth
            for percent in stride(from: 0, through: 100, by: 20) {
                let y = yAccuracy(Double(percent) / 100)
                svg.append(line(plotRight, y, plotRight + 5, y))
                svg.append(text("\(percent) %", x: plotRight + 8, y: y + 4, size: 11, anchor: "start"))
            }
            svg.append(text("accuracy", x: width - 14, y: top + plotHeight / 2, size: 12, anchor: "middle",
                            fill: accuracyColour, rotate: true))
            if let chanceAccuracy, (0...1).contains(chanceAccuracy) {
                let y = yAccuracy(chanceAccuracy)
                svg.append(#"<line x1="\#(f(left))" y1="\#(f(y))" x2="\#(f(plotRight))" y2="\#(f(y))" "#
                    + #"stroke="\#(accuracyColour)" stroke-width="1" stroke-dasharray="5,4" opacity="0.7"/>"#)
                svg.append(text("chance " + String(format: "%.3g", chanceAccuracy * 100) + " %", x: left + 6, y: y - 4,
                                size: 10, anchor: "start", fill: accuracyColour))
            }
        }

        let lossPoints = points.filter(\.loss.isFinite).map { (x(Double($0.step)), yLoss($0.loss)) }
        svg.append(polyline(lossPoints, colour: lossColour))
        if showsAccuracy {
            let accuracyPoints = points.compactMap { point in
                point.accuracy.map { (x(Double(point.step)), yAccuracy(min(max($0, 0), 1))) }
            }
            svg.append(polyline(accuracyPoints, colour: accuracyColour))
        }

        // Legend above the plot, right-aligned.
        var legend = [("loss", lossColour)]
        if showsAccuracy { legend.append(("accuracy", accuracyColour)) }
        var cursor = left + plotWidth
        for (name, colour) in legend.reversed() {
            cursor -= 30 + Double(name.count) * 7
            svg.append(line(cursor, top - 14, cursor + 20, top - 14, colour: colour, width: 2.5))
            svg.append(text(name, x: cursor + 25, y: top - 10, size: 11, anchor: "start"))
        }

        svg.append("</svg>")
        return svg.joined(separator: "\n") + "\n"
    }

    /// Writes the chart all or nothing (see `AtomicFile`). Throws `invalidFile` naming the path.
    public static func write(_ points: [CurvePoint], title: String, chanceAccuracy: Double? = nil,
                             to url: URL) throws {
        let svg = render(points, title: title, chanceAccuracy: chanceAccuracy)
        try AtomicFile.write(to: url, what: "curve chart") { try $0.write(contentsOf: Data(svg.utf8)) }
    }

    /// A round tick spacing (1, 2 or 5 × 10^k) that cuts `span` (> 0) into about six intervals.
    static func spacing(_ span: Double) -> Double {
        let rough = span / 6, magnitude = pow(10, floor(log10(rough)))
        return [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
    }

    /// A number as short as it can be written: 2000, 0.5, 2.5e-05.
    static func label(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
        return String(format: "%g", value)
    }

    static func polyline(_ points: [(Double, Double)], colour: String) -> String {
        let coordinates = points.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ")
        return #"<polyline points="\#(coordinates)" fill="none" stroke="\#(colour)" stroke-width="1.6" "#
            + #"stroke-linejoin="round"/>"#
    }

    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, colour: String = "#222",
                     width: Double = 0.8) -> String {
        #"<line x1="\#(f(x1))" y1="\#(f(y1))" x2="\#(f(x2))" y2="\#(f(y2))" stroke="\#(colour)" "#
            + #"stroke-width="\#(f(width))"/>"#
    }

    static func text(_ content: String, x: Double, y: Double, size: Double, anchor: String,
                     weight: String? = nil, fill: String = "#222", rotate: Bool = false) -> String {
        var attributes = #"x="\#(f(x))" y="\#(f(y))" font-size="\#(f(size))" fill="\#(fill)" "#
            + #"text-anchor="\#(anchor)""#
        if let weight { attributes += #" font-weight="\#(weight)""# }
        if rotate { attributes += #" transform="rotate(-90 \#(f(x)) \#(f(y)))""# }
        return "<text \(attributes)>\(GanttSVG.escape(content))</text>"
    }

    /// A coordinate with two decimals.
    static func f(_ value: Double) -> String { String(format: "%.2f", value) }
}
