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
    /// bf16 copies made since the last update, most recently used last.
    private var copies: [(slot: Int, tensor: DeviceTensor)] = []
    /// A decoder layer's seven matrices and the output head.
    static let keptCopies = 8

    /// Copies of `parameters` on `device`, each in its own memory.
    /// `fp32Only`: the slots of matrices no GEMM reads (the embedding table), which get no bf16 copy.
    public convenience init(_ parameters: Parameters, fp32Only: Set<Int> = [], on device: CUDADevice) throws {
        try self.init(names: parameters.names,
                      master: parameters.tensors.map { try DeviceTensor.upload($0, to: device, as: .float32) },
                      fp32Only: fp32Only, kernels: TrainingKernels(device: device))
    }

    /// Over existing master tensors (e.g. views of one flat buffer).
    init(names: [String], master: [DeviceTensor], fp32Only: Set<Int>, kernels: TrainingKernels) throws {
        (self.names, self.master, self.kernels) = (names, master, kernels)
        castable = master.indices.map { master[$0].shape.count >= 2 && !fp32Only.contains($0) }
    }

    /// The bf16 copy of matrix `slot`, as the GEMMs read it: made from the master weights on first use after an
    /// update (stream-ordered, so it sees every update queued before), kept while it is among the `keptCopies`
    /// most recently used. A dropped copy's memory returns to the pool once its last reader lets it go.
    public func bf16(_ slot: Int) throws -> DeviceTensor {
        guard castable.indices.contains(slot), castable[slot] else {
            throw DistFlashError(.shapeMismatch, "parameter \(slot) (\(names.indices.contains(slot) ? names[slot] : "?")) "
                + "has no bf16 copy: only the matrices a GEMM reads do")
        }
        return try lock.withLock {
            if let index = copies.firstIndex(where: { $0.slot == slot }) {
                let copy = copies.remove(at: index)
                copies.append(copy)
                return copy.tensor
            }
            let tensor = try kernels.bf16(master[slot])
            copies.append((slot, tensor))
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

    /// Zero-filled fp32 gradients of the same shapes.
    public func zeroGradients(_ blocks: CUDABlocks) throws -> [DeviceTensor] {
        try master.map { try blocks.filled($0.shape, with: 0, like: nil) }
    }
}
