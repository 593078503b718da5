/// What one rank measured while running a plan.
public struct RankStatistics: Sendable, Equatable {
    /// Seconds spent in block computations and merges.
    public var computeSeconds = 0.0
    /// Seconds spent blocked in `receive` (communication the compute did not hide). On a GPU this is host time:
    /// a step's transfers start only after the work queued before them, so it also holds GPU compute still
    /// running when the host arrived.
    public var waitSeconds = 0.0
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Largest total of received inputs and partial results for other ranks held at once.
    public var peakExtraBytes = 0

    public init() {}

    /// Figures of two passes added (peak memory: the larger).
    public static func + (a: RankStatistics, b: RankStatistics) -> RankStatistics {
        var sum = a
        sum.computeSeconds += b.computeSeconds
        sum.waitSeconds += b.waitSeconds
        sum.bytesSent += b.bytesSent
        sum.bytesReceived += b.bytesReceived
        sum.peakExtraBytes = max(a.peakExtraBytes, b.peakExtraBytes)
        return sum
    }
}
