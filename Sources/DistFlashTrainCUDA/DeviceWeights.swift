import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import Foundation

/// A model's parameters on one GPU, in `Parameters` order, one after another in one flat buffer: fp32 master weights
/// (what the optimizer updates and a checkpoint saves) and the bf16 copies of the matrices a GEMM reads, in one of
/// two ways:
/// - resident: a bf16 copy of the whole flat buffer, which the optimizer's update writes as it writes the masters
///   (no pass of its own); 2 bytes a parameter of device memory (1.8 GiB at llama-1b);
/// - on demand (`resident: false`): each made from its masters on first use after an update and kept while among
///   the `keptCopies` most recently used — the layers run one after another, so about one layer's copies are held,
///   at the price of rounding every matrix twice a step (forward and backward).
public final class DeviceWeights: @unchecked Sendable {
    // Invariant: the tensors' shapes never change; their contents change only through work on the device's stream;
    // `copies` is touched only while holding `lock`, and holds only copies of the current master weights.
    public let names: [String]
    public let master: [DeviceTensor]
    /// The bf16 copy of the whole flat buffer (padding included), when resident; whoever writes the masters keeps it
    /// current (`mastersChanged`).
    public let resident: DeviceTensor?
    /// The fp32 flat buffer the masters are views of.
    private let flat: DeviceTensor
    /// Each slot's elements in the flat buffer (the gradients' flat buffer uses the same).
    let spans: [Range<Int>]
    /// Whether a GEMM reads slot i in bf16 (the matrices; not the norm weights, nor the embedding table).
    private let castable: [Bool]
    private let kernels: TrainingKernels
    private let lock = NSLock()
    /// On demand: bf16 copies made since the last update, most recently used last, by the slots they stack.
    private var copies: [(slots: Range<Int>, tensor: DeviceTensor)] = []
    /// A decoder layer's matrices (Q, K, V stacked; W_o, gate, up, down) and the output head, with room to spare.
    static let keptCopies = 8

    /// Copies of `parameters` on `device`, one after another in one buffer (as the optimizer's flat buffer).
    /// `fp32Only`: the slots of matrices no GEMM reads (the embedding table), which get no bf16 copy.
    public convenience init(_ parameters: Parameters, fp32Only: Set<Int> = [], resident: Bool = false,
                            on device: CUDADevice) throws {
        let flat = try DeviceTensor.upload(try Tensor(shape: [parameters.scalarCount],
                                                      scalars: parameters.tensors.flatMap(\.scalars)),
                                           to: device, as: .float32)
        try self.init(names: parameters.names, flat: flat, shapes: parameters.tensors.map(\.shape), fp32Only: fp32Only,
                      resident: resident, kernels: TrainingKernels(device: device))
    }

    /// The element ranges of tensors of `shapes` laid one after another from element 0.
    static func spans(_ shapes: [[Int]]) -> [Range<Int>] {
        var start = 0
        return shapes.map { shape in
            defer { start += shape.reduce(1, *) }
            return start..<start + shape.reduce(1, *)
        }
    }

    /// Consecutive views of `flat` with `shapes`.
    static func views(of flat: DeviceTensor, _ shapes: [[Int]]) throws -> [DeviceTensor] {
        try zip(spans(shapes), shapes).map { try flat.elements($0, as: $1) }
    }

    /// Over the fp32 buffer `flat` (`[N]`, N at least the parameters' count: e.g. padded for sharding), whose first
    /// elements hold tensors of `shapes` one after another.
    init(names: [String], flat: DeviceTensor, shapes: [[Int]], fp32Only: Set<Int>, resident: Bool,
         kernels: TrainingKernels) throws {
        (self.names, self.flat, self.kernels) = (names, flat, kernels)
        spans = Self.spans(shapes)
        master = try zip(spans, shapes).map { try flat.elements($0, as: $1) }
        castable = shapes.indices.map { shapes[$0].count >= 2 && !fp32Only.contains($0) }
        self.resident = resident ? try kernels.bf16(flat) : nil
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
        if let resident {
            return try resident.elements(spans[slots.lowerBound].lowerBound..<spans[slots.upperBound - 1].upperBound,
                                         as: stackedShape(slots))
        }
        return try lock.withLock {
            if let index = copies.firstIndex(where: { $0.slots == slots }) {
                let copy = copies.remove(at: index)
                copies.append(copy)
                return copy.tensor
            }
            let tensor = try kernels.bf16(try DeviceTensor.joined(slots.map { master[$0] }, as: stackedShape(slots)))
            copies.append((slots, tensor))
            if copies.count > Self.keptCopies { copies.removeFirst() }
            return tensor
        }
    }

    /// `[Σ rows, columns]` of matrices `slots` stacked by rows (one slot: its own shape).
    private func stackedShape(_ slots: Range<Int>) -> [Int] {
        let parts = slots.map { master[$0].shape }
        return parts.count == 1 ? parts[0] : [parts.map { $0[0] }.reduce(0, +)] + parts[0].dropFirst()
    }

    /// Whoever writes the master weights calls it: on demand, the copies are dropped (the next use re-rounds them);
    /// resident, the copy is rounded again from the masters (one pass) unless the writer wrote it too
    /// (`residentWritten`, as the optimizer's update does).
    public func mastersChanged(residentWritten: Bool = false) throws {
        lock.withLock { copies.removeAll() }
        if let resident, !residentWritten { try kernels.bf16(flat, into: resident) }
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
