/// Bytes of float32 activations one training step holds for its backward pass: a counter moved as tensors are
/// kept, dropped and recomputed. Parameters, gradients, optimizer state and transient gradient buffers are not
/// activations and are not counted.
public struct ActivationMemory: Sendable, Equatable, CustomStringConvertible {
    /// Held between the forward and the backward: what the strategy keeps of every layer plus the output head's
    /// inputs (final hidden state, its normalisation, the per-token LSE).
    public private(set) var savedBytes = 0
    /// The most held at once during the step: during the forward a layer's full activations exist until the
    /// strategy drops what it does not keep; during the backward a layer's dropped activations exist again once
    /// recomputed, until that layer's backward is done.
    public private(set) var peakBytes = 0
    private var heldBytes = 0

    mutating func hold(_ bytes: Int) {
        heldBytes += bytes
        peakBytes = max(peakBytes, heldBytes)
    }

    mutating func release(_ bytes: Int) { heldBytes -= bytes }

    /// Marks the end of the forward: what is held now is what the backward starts from.
    mutating func endForward() { savedBytes = heldBytes }

    public var description: String {
        func mib(_ bytes: Int) -> String { "\(Double(bytes * 100 / (1 << 20)) / 100) MiB" }
        return "activations saved \(mib(savedBytes)), peak \(mib(peakBytes))"
    }
}
