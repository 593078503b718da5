import DistFlashAttn

/// A tensor map (the driver's CUtensorMap: 128 opaque bytes) over a 16-bit [B, S, heads, D] tensor, for kernels
/// whose loads run on the Tensor Memory Accelerator: boxes of 64 head-dimension columns × `rows` rows of one head,
/// written to shared memory in the 128-byte swizzle, elements past the tensor's end read as zeros. A kernel takes
/// it by value (`CUDADevice.Argument.tensorMap`).
struct TensorMap {
    /// The driver's 128 bytes.
    let words: [UInt64]
}

extension TensorMap {
    /// `tensor`: [B, S, heads, D], bf16 or fp16, D a multiple of 64; `rows`: the box's rows (1…256).
    init(_ tensor: DeviceTensor, rows: Int) throws {
        let driver = tensor.device.driver
        guard let encode = driver.cuTensorMapEncodeTiled else {
            throw DistFlashError(.runtime, "the CUDA driver has no cuTensorMapEncodeTiled (CUDA 12 or later is "
                + "needed for Hopper's TMA kernels); set DISTFLASH_CUDA_KERNEL=mma to use the mma.sync kernels")
        }
        guard tensor.shape.count == 4, tensor.precision != .float32, tensor.shape[3] % 64 == 0,
              (1...256).contains(rows) else {
            throw DistFlashError(.shapeMismatch, "tensor map of \(tensor.shape) (\(tensor.precision)) with "
                + "\(rows)-row boxes: needs a 16-bit [B, S, heads, D] tensor with D a multiple of 64, boxes of 1…256 rows")
        }
        let (batch, sequence, heads, dim) = (tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3])
        // Axes innermost first: (D, heads, S, B); byte strides of the outer three.
        let sizes = [dim, heads, sequence, batch].map { UInt64($0) }
        let strides = [dim * 2, heads * dim * 2, sequence * heads * dim * 2].map { UInt64($0) }
        let box: [UInt32] = [64, 1, UInt32(rows), 1], steps: [UInt32] = [1, 1, 1, 1]
        // CUtensorMapDataType FLOAT16 = 6, BFLOAT16 = 9; INTERLEAVE_NONE = 0; SWIZZLE_128B = 3;
        // L2_PROMOTION_L2_256B = 3; FLOAT_OOB_FILL_NONE = 0 (zeros).
        let dataType: Int32 = tensor.precision == .float16 ? 6 : 9
        let map = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 64)
        defer { map.deallocate() }
        try driver.check(encode(map, dataType, 4, UnsafeMutableRawPointer(bitPattern: UInt(tensor.address)), sizes,
                                strides, box, steps, 0, 3, 3, 0),
                         "cuTensorMapEncodeTiled(\(tensor.shape), \(rows)-row boxes)",
                         hint: "the tensor's address must be 16-byte aligned")
        words = (0..<16).map { map.load(fromByteOffset: 8 * $0, as: UInt64.self) }
    }
}
