import Foundation

/// How fast one device runs attention blocks: the *sustained* throughput of the block kernels, counted with the
/// library's FLOP convention (4·B·H·D per visible (query, key) pair forward; backward 2.5× that), not a datasheet
/// peak. The simulator assumes the same throughput for every block size, so it is optimistic for tiny blocks
/// (kernel launch and tail effects are not modelled).
public struct DeviceModel: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    /// Sustained attention throughput, FLOP/s.
    public var flopsPerSecond: Double

    public init(name: String, flopsPerSecond: Double) {
        self.name = name
        self.flopsPerSecond = flopsPerSecond
    }

    /// H100 SXM running a FlashAttention-class bf16 kernel: 400 TFLOP/s. Assumed, not measured here: about 40 % of
    /// the 989 TFLOP/s dense bf16 tensor-core peak of the H100 SXM datasheet, the range FlashAttention-2 reaches on
    /// H100 for long sequences (FlashAttention-3 reports more). Override with `--flops`.
    public static let h100 = DeviceModel(name: "h100", flopsPerSecond: 400e12)

    /// A many-core x86-64 host running this library's CPU kernels: 150 GFLOP/s. Assumed, of the order of what
    /// `distflash bench cpu` reports on an AVX-512 server; measure yours with it and pass `--flops`.
    public static let cpu = DeviceModel(name: "cpu", flopsPerSecond: 150e9)

    public static let presets: [DeviceModel] = [.h100, .cpu]

    /// The preset called `name`, or nil.
    public static func preset(named name: String) -> DeviceModel? { presets.first { $0.name == name } }

    public var description: String { "\(name) (\(formatRate(flopsPerSecond, unit: "FLOP/s")))" }
}

/// `value` with an SI prefix, e.g. "400 TFLOP/s", "12.5 GB/s".
func formatRate(_ value: Double, unit: String) -> String {
    guard value.isFinite else { return "∞ \(unit)" }
    for (scale, prefix) in [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] where value >= scale {
        return "\(trimmed(value / scale)) \(prefix)\(unit)"
    }
    return "\(trimmed(value)) \(unit)"
}

/// Up to three significant digits without trailing zeros ("12.5", "400", "0.25").
func trimmed(_ value: Double) -> String {
    var text = value >= 100 ? String(Int(value.rounded())) : String(format: value >= 10 ? "%.1f" : "%.2f", value)
    if text.contains(".") {
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
    }
    return text
}
