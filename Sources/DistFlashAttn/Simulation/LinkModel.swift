/// The link each rank sends and receives on, full duplex: a rank's sends of one step share its outgoing direction
/// (their bytes add up), its receives share the incoming one, and the two run in parallel.
/// ```
/// link time of a rank's sends in one step = latency + Σ bytes / bandwidth      (0 when it sends nothing)
/// ```
/// One latency per step and direction, not per message, because a step's transfers are posted together as one
/// group (like NCCL's grouped send/recv) and their start-up costs overlap.
public struct LinkModel: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    /// Bytes per second per direction per rank.
    public var bandwidth: Double
    /// Seconds from posting a step's transfers to the first byte arriving.
    public var latency: Double

    public init(name: String, bandwidth: Double, latency: Double) {
        self.name = name
        self.bandwidth = bandwidth
        self.latency = latency
    }

    /// H100 NVLink 4 through NVSwitch, point to point: 150 GB/s per direction, 5 µs. Both assumed: the datasheet
    /// gives 450 GB/s per direction summed over all 18 links of a GPU; one NCCL send/recv pair reaches a fraction
    /// of that, and 5 µs stands for NCCL's launch and synchronisation overhead per grouped step.
    public static let nvlink = LinkModel(name: "nvlink", bandwidth: 150e9, latency: 5e-6)

    /// 100 Gb/s InfiniBand, one NIC per GPU (the DistFlashAttn paper's two-node setup): 12.5 GB/s is the line rate
    /// (spec); 10 µs latency is assumed (NCCL over IB, including launch overhead).
    public static let infiniband = LinkModel(name: "infiniband", bandwidth: 12.5e9, latency: 10e-6)

    /// PCIe 4.0 ×16 between GPUs without NVLink: 25 GB/s per direction, assumed as about 80 % of the 31.5 GB/s
    /// spec; 10 µs latency assumed.
    public static let pcie = LinkModel(name: "pcie", bandwidth: 25e9, latency: 10e-6)

    /// Infinite bandwidth and zero latency: what the paper's ideal-case arithmetic assumes.
    public static let ideal = LinkModel(name: "ideal", bandwidth: .infinity, latency: 0)

    public static let presets: [LinkModel] = [.nvlink, .infiniband, .pcie, .ideal]

    /// The preset called `name`, or nil.
    public static func preset(named name: String) -> LinkModel? { presets.first { $0.name == name } }

    /// Seconds one direction of a rank's link is busy moving `bytes` posted together in one step.
    public func seconds(bytes: Int) -> Double { bytes == 0 ? 0 : latency + Double(bytes) / bandwidth }

    public var description: String {
        "\(name) (\(formatRate(bandwidth, unit: "B/s")), \(formatDuration(latency)) latency)"
    }
}

/// A duration in s, ms, µs or ns, three significant digits.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "∞ s" }
    if seconds == 0 { return "0 s" }
    for (scale, unit) in [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs")] where seconds >= scale {
        return "\(trimmed(seconds / scale)) \(unit)"
    }
    return "\(trimmed(seconds / 1e-9)) ns"
}
