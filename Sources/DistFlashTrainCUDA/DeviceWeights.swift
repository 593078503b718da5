import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Foundation

/// A model's parameters on one GPU, in `Parameters` order: fp32 master weights (what the optimizer updates and a
/// checkpoint saves) and bf16 copies of the matrices a GEMM reads, made on demand: the layers run one after
/// another, so only the most recently used `keptCopies` matrices (one layer's and the output head's) are held in
/// bf16, not a second copy of the whole model (1.7 GiB less at llama-1b).
public final class DeviceWeights: @unchecked Sendable {
    // Invariant: the tensors' shapes never change; their contents change only through work on the device's stream;
    // `copies` is touched only while holding `lock`, and holds only copies of the current master weights.
    public let names: [String]
    public let master: [DeviceTensor]
    /// Whether a GEMM reads slot i in bf16 (the matrices; not the norm weights, nor the embedding table).
    private let castable: [Bool]
    private let kernels: TrainingKernels
    private let lock = NSLock()
    /// bf16 copies made since the last update, most recently used last, by the slots they stack.
    private var copies: [(slots: Range<Int>, tensor: DeviceTensor)] = []
    /// A decoder layer's matrices (Q, K, V stacked; W_o, gate, up, down) and the output head, with room to spare.
    static let keptCopies = 8

    /// Copies of `parameters` on `device`, one after another in one buffer (as the optimizer's flat buffer).
    /// `fp32Only`: the slots of matrices no GEMM reads (the embedding table), which get no bf16 copy.
    public convenience init(_ parameters: Parameters, fp32Only: Set<Int> = [], on device: CUDADevice) throws {
        let flat = try DeviceTensor.upload(try Tensor(shape: [parameters.scalarCount],
                                                      scalars: parameters.tensors.flatMap(\.scalars)),
                                           to: device, as: .float32)
        try self.init(names: parameters.names, master: try Self.views(of: flat, parameters.tensors.map(\.shape)),
                      fp32Only: fp32Only, kernels: TrainingKernels(device: device))
    }

    /// Consecutive views of `flat` with `shapes`.
    static func views(of flat: DeviceTensor, _ shapes: [[Int]]) throws -> [DeviceTensor] {
        var start = 0
        return try shapes.map { shape in
            defer { start += shape.reduce(1, *) }
            return try flat.elements(start..<start + shape.reduce(1, *), as: shape)
        }
    }

    /// Over existing master tensors (e.g. views of one flat buffer).
    init(names: [String], master: [DeviceTensor], fp32Only: Set<Int>, kernels: TrainingKernels) throws {
        (self.names, self.master, self.kernels) = (names, master, kernels)
        castable = master.indices.map { master[$0].shape.count >= 2 && !fp32Only.contains($0) }
    }

    /// The bf16 copy of matrix `slot`, as the GEMMs read it: made from the master weights on first use after an
    /// update (stream-ordered, so it sees every update queued before), kept while it is among the `keptCopies`
    /// most recently used. A dropped copy's memory returns to the pool once its last reader lets it go.
    public func bf16(_ slot: Int) throws -> DeviceTensor { try bf16(stacking: slot..<slot + 1) }

    /// The bf16 copy of matrices `slots` stacked by rows (`[Σ rows, columns]`; one slot: its own shape), cast in
    /// one pass — the Q, K and V projections as one matrix for the GEMMs that read all three. Kept like `bf16`.
    public func bf16(stacking slots: Range<Int>) throws -> DeviceTensor {
        guard !slots.isEmpty, slots.allSatisfy({ castable.indices.contains($0) && castable[$0] }),
              Set(slots.map { master[$0].shape.dropFirst() }).count == 1 else {
            let named = slots.map { names.indices.contains($0) ? names[$0] : "?" }
            throw DistFlashError(.shapeMismatch, "parameters \(slots) (\(named)) have no stacked bf16 copy: only "
                + "matrices a GEMM reads, with one column count, do")
        }
        return try lock.withLock {
            if let index = copies.firstIndex(where: { $0.slots == slots }) {
                let copy = copies.remove(at: index)
                copies.append(copy)
                return copy.tensor
            }
            let parts = slots.map { master[$0] }
            let shape = parts.count == 1 ? parts[0].shape
                : [parts.map { $0.shape[0] }.reduce(0, +)] + parts[0].shape.dropFirst()
            let tensor = try kernels.bf16(try DeviceTensor.joined(parts, as: shape))
            copies.append((slots, tensor))
            if copies.count > Self.keptCopies { copies.removeFirst() }
            return tensor
        }
    }

    /// Drops every bf16 copy; whoever writes the master weights calls it (the next use re-rounds from them).
    public func dropCopies() {
        lock.withLock { copies.removeAll() }
    }

    /// The master weights as host tensors.
    public func download() throws -> Parameters {
        Parameters(try zip(names, master).map { (name: $0, tensor: try $1.download()) })
    }

    /// Zero-filled fp32 gradients of the same shapes, one after another in one buffer.
    public func zeroGradients(_ blocks: CUDABlocks) throws -> [DeviceTensor] {
        let flat = try blocks.filled([master.map(\.count).reduce(0, +)], with: 0, like: nil)
        return try Self.views(of: flat, master.map(\.shape))
    }
}
