import DistFlashAttn
import Foundation

/// Linear warm-up to the peak rate, then cosine decay to `minimumRatio` × peak at `totalSteps`, flat after.
/// For step t (0-based: the rate of the t-th update), peak η, warm-up w, total T, minimum η_min = ratio·η:
/// ```
///  t < w:       η · (t + 1) / w
///  w ≤ t < T:   η_min + (η − η_min) · ½(1 + cos(π · (t − w) / (T − w)))
///  t ≥ T:       η_min
/// ```
/// ```
///  η     ┤  ╭─╮
///        ┤ ╱   ‾╲_
///        ┤╱       ‾╲_
///  η_min ┤            ‾‾‾────────
///        └─┴────────────┴──────► t
///          w            T
/// ```
public struct LearningRateSchedule: Sendable, Equatable {
    public let peak: Float
    public let warmupSteps: Int
    public let totalSteps: Int
    public let minimumRatio: Float

    /// Throws `invalidProblem` naming the value unless peak > 0, 0 ≤ warm-up ≤ total, total ≥ 1 and the ratio is
    /// in [0, 1].
    public init(peak: Float, warmupSteps: Int, totalSteps: Int, minimumRatio: Float = 0.1) throws {
        func fail(_ message: String) -> DistFlashError {
            DistFlashError(.invalidProblem, "learning-rate schedule: \(message)")
        }
        guard peak > 0, peak.isFinite else { throw fail("peak = \(peak): must be finite and > 0") }
        guard totalSteps >= 1 else { throw fail("total steps = \(totalSteps): must be ≥ 1") }
        guard (0...totalSteps).contains(warmupSteps) else {
            throw fail("warm-up steps = \(warmupSteps): must be in 0...total steps (\(totalSteps))")
        }
        guard (0...1).contains(minimumRatio) else { throw fail("minimum ratio = \(minimumRatio): must be in [0, 1]") }
        (self.peak, self.warmupSteps, self.totalSteps, self.minimumRatio) =
            (peak, warmupSteps, totalSteps, minimumRatio)
    }

    /// The learning rate of update `step` (0-based).
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let minimum = Double(peak * minimumRatio)
        guard step < totalSteps else { return Float(minimum) }
        let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
        return Float(minimum + (Double(peak) - minimum) * 0.5 * (1 + cos(Double.pi * progress)))
    }
}
