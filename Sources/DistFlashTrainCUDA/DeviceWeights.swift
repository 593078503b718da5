import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain

/// A model's parameters on one GPU, in `Parameters` order: fp32 master weights (what the optimizer updates and a
/// checkpoint saves) and, for every matrix a GEMM reads, a bf16 copy (refreshed after each update).
public final class DeviceWeights: @unchecked Sendable {
    // Invariant: the tensors' shapes never change; their contents change only through work on the device's stream.
    public let names: [String]
    public let master: [DeviceTensor]
    /// The bf16 copy of each matrix a GEMM reads (nil for the norm weights and the embedding table, read in fp32).
    public let bf16: [DeviceTensor?]

    /// Copies of `parameters` on `device`, each in its own memory.
    /// `fp32Only`: the slots of matrices no GEMM reads (the embedding table), which get no bf16 copy.
    public convenience init(_ parameters: Parameters, fp32Only: Set<Int> = [], on device: CUDADevice) throws {
        try self.init(names: parameters.names,
                      master: parameters.tensors.map { try DeviceTensor.upload($0, to: device, as: .float32) },
                      fp32Only: fp32Only, kernels: TrainingKernels(device: device))
    }

    /// Over existing master tensors (e.g. views of one flat buffer), with fresh bf16 copies of the GEMMs' matrices.
    init(names: [String], master: [DeviceTensor], fp32Only: Set<Int>, kernels: TrainingKernels) throws {
        (self.names, self.master) = (names, master)
        bf16 = try master.indices.map { i in
            master[i].shape.count >= 2 && !fp32Only.contains(i) ? try kernels.bf16(master[i]) : nil
        }
    }

    /// Re-rounds every bf16 copy from its master (after an update).
    func refreshCopies(_ kernels: TrainingKernels) throws {
        for (master, copy) in zip(master, bf16) {
            if let copy { try kernels.bf16(master, into: copy) }
        }
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
