import DistFlashAttn
import Foundation

/// Maximum and mean absolute error of one tensor against the float64 reference.
public struct ErrorStats: Sendable, Equatable {
    public var maxAbs: Double
    public var meanAbs: Double

    /// Equal infinities (LSE of rows that see no key) count as exact; any other infinity or NaN is an infinite
    /// error, so it can never pass.
    public init<T: BinaryFloatingPoint>(_ values: [T], reference: [Double]) {
        precondition(values.count == reference.count, "compared tensors differ in size")
        var maxAbs = 0.0, sum = 0.0
        for (value, ref) in zip(values, reference) {
            let v = Double(value)
            let error: Double
            if v == ref { error = 0 } else if v.isFinite && ref.isFinite { error = abs(v - ref) } else { error = .infinity }
            maxAbs = max(maxAbs, error.isNaN ? .infinity : error)
            sum += error
        }
        self.maxAbs = maxAbs
        self.meanAbs = reference.isEmpty ? 0 : sum / Double(reference.count)
    }
}

/// The rule from flash-attention's tests: a result passes when its worst error against the float64 reference is
/// at most twice the worst error of naive attention computed in the same precision, plus a small absolute slack
/// (it covers the cancellation in dS = P∘(dP − δ) when the exact gradient is ~0, e.g. a row that sees one key):
/// ```
/// maxerr(ours − ref) ≤ 2 · maxerr(naive_same_precision − ref) + atol,   atol = 1e-5 · max(1, max|ref|)
/// ```
public struct ToleranceCheck: Sendable {
    public var name: String
    public var ours: ErrorStats
    public var baseline: ErrorStats
    public var atol: Double

    public init<T: BinaryFloatingPoint, U: BinaryFloatingPoint>(_ name: String, ours: [T], baseline: [U],
                                                               reference: [Double]) {
        self.name = name
        self.ours = ErrorStats(ours, reference: reference)
        self.baseline = ErrorStats(baseline, reference: reference)
        let scale = reference.lazy.filter(\.isFinite).map(abs).max() ?? 0
        self.atol = 1e-5 * max(1, scale)
    }

    public var bound: Double { 2 * baseline.maxAbs + atol }
    public var passed: Bool { ours.maxAbs <= bound }

    public var summary: String {
        func f(_ x: Double) -> String { x.isFinite ? String(format: "%.2e", x) : "\(x)" }
        return "\(name): max \(f(ours.maxAbs)) mean \(f(ours.meanAbs)) | bound \(f(bound)) "
            + "(naive fp32 max \(f(baseline.maxAbs))) \(passed ? "ok" : "FAIL")"
    }
}
