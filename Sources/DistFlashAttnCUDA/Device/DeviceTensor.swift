import DistFlashAttn

/// A dense row-major tensor in device memory: fp32 (accumulators: O, LSE, δ, gradients) or bf16 / fp16 (inputs:
/// Q, K, V, dO). A reference type: primitives update it in place on the device's compute stream.
public final class DeviceTensor: ShapedBlock, @unchecked Sendable {
    // Invariant: `shape` and `precision` never change; the contents change only through work on `device.stream`.
    public enum Precision: Sendable, Equatable {
        case float32, bfloat16, float16
        var size: Int { self == .float32 ? 4 : 2 }

        /// The device type of a problem's inputs (nil for fp32: the CUDA kernels take 16-bit inputs).
        public init?(inputsOf dtype: AttentionProblem.DType) {
            switch dtype {
            case .fp32: return nil
            case .bf16: self = .bfloat16
            case .fp16: self = .float16
            }
        }
    }

    public let shape: [Int]
    public let precision: Precision
    let buffer: DeviceBuffer
    /// Where the tensor starts in `buffer`, in bytes (views of a larger tensor start inside it).
    private let offset: Int

    init(_ device: CUDADevice, shape: [Int], precision: Precision) throws {
        (self.shape, self.precision, offset) = (shape, precision, 0)
        buffer = try DeviceBuffer(device, bytes: shape.reduce(1, *) * precision.size)
    }

    /// A tensor whose contents are whatever the memory held: for one that the next work queued writes whole.
    public static func unfilled(_ device: CUDADevice, shape: [Int], precision: Precision) throws -> DeviceTensor {
        try DeviceTensor(device, shape: shape, precision: precision)
    }

    private init(buffer: DeviceBuffer, offset: Int = 0, shape: [Int], precision: Precision) {
        (self.buffer, self.offset, self.shape, self.precision) = (buffer, offset, shape, precision)
    }

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * precision.size }
    var address: UInt64 { buffer.address + UInt64(offset) }
    /// The GPU holding the tensor.
    public var device: CUDADevice { buffer.device }

    /// A device copy of `tensor`, rounded to bf16 or fp16 if asked.
    public static func upload(_ tensor: Tensor, to device: CUDADevice, as precision: Precision) throws -> DeviceTensor {
        let buffer = switch precision {
        case .float32: try DeviceBuffer.upload(device, tensor.scalars)
        case .bfloat16: try DeviceBuffer.upload(device, tensor.scalars.map(BFloat16.bits))
        case .float16: try DeviceBuffer.upload(device, tensor.scalars.map { Float16($0).bitPattern })
        }
        return DeviceTensor(buffer: buffer, shape: tensor.shape, precision: precision)
    }

    /// The same memory read with another shape of the same element count (no copy; writes show through).
    public func reshaped(_ shape: [Int]) throws -> DeviceTensor {
        guard shape.reduce(1, *) == count, shape.allSatisfy({ $0 >= 0 }) else {
            throw DistFlashError(.shapeMismatch, "cannot view \(self.shape) (\(count) elements) as \(shape)")
        }
        return DeviceTensor(buffer: buffer, offset: offset, shape: shape, precision: precision)
    }

    /// Elements `range` of the tensor's row-major order, read as `shape` (no copy; writes show through): the
    /// parameters' or gradients' slice of one flat buffer.
    public func elements(_ range: Range<Int>, as shape: [Int]) throws -> DeviceTensor {
        guard range.lowerBound >= 0, range.upperBound <= count, shape.reduce(1, *) == range.count else {
            throw DistFlashError(.shapeMismatch, "elements \(range) of \(self.shape) (\(count) elements) as \(shape)")
        }
        return DeviceTensor(buffer: buffer, offset: offset + range.lowerBound * precision.size, shape: shape,
                            precision: precision)
    }

    /// Tensors that lie one after another in one buffer (views of a flat buffer, in order), read as one tensor of
    /// `shape` (no copy): e.g. the Q, K and V projections' weights stacked as one `[rows, E]` matrix.
    public static func joined(_ parts: [DeviceTensor], as shape: [Int]) throws -> DeviceTensor {
        guard let first = parts.first else {
            throw DistFlashError(.shapeMismatch, "joined: no tensors to join")
        }
        var end = first.offset
        for part in parts {
            guard part.buffer === first.buffer, part.offset == end, part.precision == first.precision else {
                throw DistFlashError(.shapeMismatch, "joined: tensors \(parts.map(\.shape)) do not follow one another "
                    + "in one buffer of one type")
            }
            end += part.byteCount
        }
        let count = (end - first.offset) / first.precision.size
        guard shape.reduce(1, *) == count else {
            throw DistFlashError(.shapeMismatch, "joined: \(count) elements of \(parts.map(\.shape)) as \(shape)")
        }
        return DeviceTensor(buffer: first.buffer, offset: first.offset, shape: shape, precision: first.precision)
    }

    /// The contents as a host tensor (16-bit types widened to fp32), after the work queued before.
    public func download() throws -> Tensor {
        switch precision {
        case .float32:
            return try Tensor(shape: shape, scalars: buffer.download(count, as: Float.self, initial: 0, byteOffset: offset))
        case .bfloat16:
            let bits = try buffer.download(count, as: UInt16.self, initial: 0, byteOffset: offset)
            return try Tensor(shape: shape, scalars: bits.map { Float(bitPattern: UInt32($0) << 16) })
        case .float16:
            let bits = try buffer.download(count, as: UInt16.self, initial: 0, byteOffset: offset)
            return try Tensor(shape: shape, scalars: bits.map { Float(Float16(bitPattern: $0)) })
        }
    }

}
