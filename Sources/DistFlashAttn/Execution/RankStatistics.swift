/// What one rank measured while running a plan.
public struct RankStatistics: Sendable, Equatable {
    /// Seconds spent in block computations and merges.
    public var computeSeconds = 0.0
    /// Seconds spent blocked in `receive` (communication the compute did not hide).
    public var waitSeconds = 0.0
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Largest total of received inputs and partial results for other ranks held at once.
    public var peakExtraBytes = 0

    public init() {}
}
