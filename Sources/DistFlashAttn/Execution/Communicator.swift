/// Point-to-point messaging between the ranks of one run, one plan step at a time. A message is a list of tensors
/// (`Payload`: host `Tensor`s, or a GPU backend's device blocks) identified by (sender, receiver, tag); a plan's
/// transfers map to tags one to one.
///
/// A rank posts all of a step's sends and receives together (`post`), computes, then `wait`s for the receives.
/// Posting them as one group is what lets NCCL run them without any order of peers deadlocking (one
/// ncclGroupStart/End); receive shapes and precisions are given up front because NCCL receives into buffers
/// sized in advance.
///
/// Contract: `post` never blocks on a peer; `wait` blocks until every receive of the group has arrived, the run is
/// aborted, or the communicator's timeout passes — it never hangs. After `abort`, every pending and future call on
/// any rank throws an error that names the failure.
public protocol Communicator<Payload>: Sendable {
    associatedtype Payload: ShapedBlock
    var ranks: Int { get }
    /// Starts one group of sends and receives of `rank`.
    func post(_ exchange: Exchange<Payload>, rank: Int) throws -> ExchangePending
    /// The payloads of the group's receives, in the order they were posted, each checked against its shapes.
    func wait(_ pending: ExchangePending, rank: Int) throws -> [[Payload]]
    /// Returns once every rank has called it; throws if the run was aborted or the timeout passes. A run ends
    /// with it, so no rank reports success while another failed.
    func barrier(rank: Int) throws
    /// Stops the run on every rank because of `error` (the first abort wins).
    func abort(_ error: DistFlashError)
}

/// One rank's sends and receives of one step.
public struct Exchange<Payload: ShapedBlock>: Sendable {
    public struct Send: Sendable {
        public var to: Int
        public var tag: Int
        public var payload: [Payload]
        public init(to: Int, tag: Int, payload: [Payload]) { (self.to, self.tag, self.payload) = (to, tag, payload) }
    }

    public var sends: [Send] = []
    public var receives: [ExchangeReceive] = []
    public init(sends: [Send] = [], receives: [ExchangeReceive] = []) { (self.sends, self.receives) = (sends, receives) }
}

/// A message a rank expects: its sender, tag, and the shape and precision of each tensor.
public struct ExchangeReceive: Sendable, Equatable {
    public var from: Int
    public var tag: Int
    public var shapes: [[Int]]
    /// One per tensor; empty means all accumulators (fp32).
    public var precisions: [BlockPrecision]
    public init(from: Int, tag: Int, shapes: [[Int]], precisions: [BlockPrecision] = []) {
        (self.from, self.tag, self.shapes, self.precisions) = (from, tag, shapes, precisions)
    }

    /// The precision of tensor `i`.
    public func precision(_ i: Int) -> BlockPrecision { precisions.isEmpty ? .accumulator : precisions[i] }
}

/// A posted group: what `wait` must deliver, and the communicator's handle on it.
public struct ExchangePending: Sendable {
    public let receives: [ExchangeReceive]
    public let token: Int
    public init(receives: [ExchangeReceive], token: Int = 0) { (self.receives, self.token) = (receives, token) }
}

extension Communicator {
    /// Posts `exchange` and waits for it at once (no overlap).
    public func exchange(_ exchange: Exchange<Payload>, rank: Int) throws -> [[Payload]] {
        try wait(try post(exchange, rank: rank), rank: rank)
    }
}
