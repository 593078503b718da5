/// Point-to-point messaging between the ranks of one run, one plan step at a time. A message is a list of tensors
/// identified by (sender, receiver, tag); a plan's transfers map to tags one to one.
///
/// A rank posts all of a step's sends and receives together (`post`), computes, then `wait`s for the receives.
/// Posting them as one group is what lets NCCL run them without any order of peers deadlocking (one
/// ncclGroupStart/End); receive shapes are given up front because NCCL receives into buffers sized in advance.
///
/// Contract: `post` never blocks on a peer; `wait` blocks until every receive of the group has arrived, the run is
/// aborted, or the communicator's timeout passes — it never hangs. After `abort`, every pending and future call on
/// any rank throws an error that names the failure.
public protocol Communicator: Sendable {
    var ranks: Int { get }
    /// Starts one group of sends and receives of `rank`.
    func post(_ exchange: Exchange, rank: Int) throws -> Exchange.Pending
    /// The payloads of the group's receives, in the order they were posted, each checked against its shapes.
    func wait(_ pending: Exchange.Pending, rank: Int) throws -> [[Tensor]]
    /// Returns once every rank has called it; throws if the run was aborted or the timeout passes. A run ends
    /// with it, so no rank reports success while another failed.
    func barrier(rank: Int) throws
    /// Stops the run on every rank because of `error` (the first abort wins).
    func abort(_ error: DistFlashError)
}

/// One rank's sends and receives of one step.
public struct Exchange: Sendable {
    public struct Send: Sendable {
        public var to: Int
        public var tag: Int
        public var payload: [Tensor]
        public init(to: Int, tag: Int, payload: [Tensor]) { (self.to, self.tag, self.payload) = (to, tag, payload) }
    }

    public struct Receive: Sendable, Equatable {
        public var from: Int
        public var tag: Int
        /// Shape of each tensor of the payload.
        public var shapes: [[Int]]
        public init(from: Int, tag: Int, shapes: [[Int]]) { (self.from, self.tag, self.shapes) = (from, tag, shapes) }
    }

    /// A posted group: what `wait` must deliver, and the communicator's handle on it.
    public struct Pending: Sendable {
        public let receives: [Receive]
        public let token: Int
        public init(receives: [Receive], token: Int = 0) { (self.receives, self.token) = (receives, token) }
    }

    public var sends: [Send] = []
    public var receives: [Receive] = []
    public init(sends: [Send] = [], receives: [Receive] = []) { (self.sends, self.receives) = (sends, receives) }
}

extension Communicator {
    /// Posts `exchange` and waits for it at once (no overlap).
    public func exchange(_ exchange: Exchange, rank: Int) throws -> [[Tensor]] {
        try wait(try post(exchange, rank: rank), rank: rank)
    }
}
