/// Point-to-point messaging between the ranks of one run. A message is a list of tensors identified by
/// (sender, receiver, tag); a plan's transfers map to tags one to one.
///
/// Contract: `send` never blocks on the receiver; `receive` blocks until the message has arrived, the run is
/// aborted, or the communicator's timeout passes — it never hangs. After `abort`, every pending and future
/// `receive` and `send` on any rank throws an error that names the failure.
public protocol Communicator: Sendable {
    var ranks: Int { get }
    func send(_ payload: [Tensor], from: Int, to: Int, tag: Int) throws
    func receive(from: Int, to: Int, tag: Int) throws -> [Tensor]
    /// Returns once every rank has called it; throws if the run was aborted or the timeout passes. A run ends
    /// with it, so no rank reports success while another failed.
    func barrier(rank: Int) throws
    /// Stops the run on every rank because of `error` (the first abort wins).
    func abort(_ error: DistFlashError)
}
