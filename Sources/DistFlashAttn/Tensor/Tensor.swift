/// A dense row-major float32 tensor on the host. Value semantics (copy-on-write storage).
public struct Tensor: Sendable, Equatable {
    public let shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], repeating value: Float = 0) {
        self.shape = shape
        self.scalars = [Float](repeating: value, count: shape.reduce(1, *))
    }

    public init(shape: [Int], scalars: [Float]) throws {
        guard shape.reduce(1, *) == scalars.count else {
            throw DistFlashError(.shapeMismatch,
                                 "tensor of shape \(shape) needs \(shape.reduce(1, *)) values, got \(scalars.count)")
        }
        self.shape = shape
        self.scalars = scalars
    }

    public var count: Int { scalars.count }

    /// Throws unless the shape is `expected`; `name` appears in the message.
    public func requireShape(_ expected: [Int], _ name: String) throws {
        guard shape == expected else {
            throw DistFlashError(.shapeMismatch, "\(name) has shape \(shape), expected \(expected)")
        }
    }

    /// Values rounded to bfloat16 and back (what a bf16 input holds).
    public func roundedToBFloat16() -> Tensor { rounded(to: .bf16) }

    /// Values as inputs of `dtype` hold them.
    public func rounded(to dtype: AttentionProblem.DType) -> Tensor {
        guard dtype != .fp32 else { return self }
        var copy = self
        for i in copy.scalars.indices { copy.scalars[i] = dtype.round(copy.scalars[i]) }
        return copy
    }
}
