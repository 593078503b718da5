import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain

/// A model's parameters on one GPU, in `Parameters` order: fp32 master weights (what the optimizer updates and a
/// checkpoint saves) and, for every matrix a GEMM reads, a bf16 copy (refreshed by the optimizer's update).
public final class DeviceWeights: @unchecked Sendable {
    // Invariant: the tensors' shapes never change; their contents change only through work on the device's stream.
    public let names: [String]
    public let master: [DeviceTensor]
    /// The bf16 copy of each tensor of rank 2 (nil for the norm weights, which stay fp32).
    public let bf16: [DeviceTensor?]

    public init(_ parameters: Parameters, on device: CUDADevice) throws {
        let kernels = TrainingKernels(device: device)
        names = parameters.names
        master = try parameters.tensors.map { try DeviceTensor.upload($0, to: device, as: .float32) }
        bf16 = try master.map { $0.shape.count >= 2 ? try kernels.bf16($0) : nil }
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
