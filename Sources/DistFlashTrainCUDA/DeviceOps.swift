import DistFlashAttn
import DistFlashAttnCUDA

/// The GPU operations a model's layers share: cuBLAS GEMMs, the training kernels, and the executor's block ops
/// (fill, copy) — all on one device's compute stream. Every GEMM counts in `clock`'s "gemm" phase.
struct DeviceOps {
    let matmul: DeviceMatmul
    let kernels: TrainingKernels
    let blocks: CUDABlocks
    let clock: PhaseClock

    /// C = α·op(A)·op(B) + β·C (`DeviceMatmul.multiply`).
    func multiply(_ a: DeviceTensor, _ b: DeviceTensor, transposeA: Bool = false, transposeB: Bool = false,
                  into c: DeviceTensor, beta: Float = 0) throws {
        try clock.time("gemm") {
            try matmul.multiply(a, b, transposeA: transposeA, transposeB: transposeB, into: c, beta: beta)
        }
    }

    /// D = op(A)·op(B) + C into a new fp32 tensor of C's shape (C only read: `DeviceMatmul.multiply(adding:)`).
    func multiply(_ a: DeviceTensor, _ b: DeviceTensor, transposeB: Bool = false, adding c: DeviceTensor) throws
        -> DeviceTensor {
        let d = try DeviceTensor.unfilled(matmul.device, shape: c.shape, precision: .float32)
        try clock.time("gemm") { try matmul.multiply(a, b, transposeB: transposeB, adding: c, into: d) }
        return d
    }

    /// y = x·Wᵀ `[T, out]` (x bf16 `[T, in]`, W bf16 `[out, in]`), fp32 unless `precision` says bf16 (for a y
    /// that only a GEMM or a bf16-reading kernel takes: half the bytes written and read).
    func linear(_ x: DeviceTensor, _ weight: DeviceTensor, precision: DeviceTensor.Precision = .float32) throws
        -> DeviceTensor {
        try clock.time("gemm") {
            try matmul.product(x.reshaped([x.count / weight.shape[1], weight.shape[1]]), weight, transposeB: true,
                               precision: precision)
        }
    }

    /// dx = dy·W `[T, in]` (dy bf16 `[T, out]`, W bf16 `[out, in]`), fp32 unless `precision` says bf16.
    func inputGradient(_ dy: DeviceTensor, _ weight: DeviceTensor, precision: DeviceTensor.Precision = .float32)
        throws -> DeviceTensor {
        try clock.time("gemm") {
            try matmul.product(dy.reshaped([dy.count / weight.shape[0], weight.shape[0]]), weight, precision: precision)
        }
    }

    /// dW += dyᵀ·x, or dW = dyᵀ·x without `accumulating` (dy bf16 `[T, out]`, x bf16 `[T, in]`, dW fp32 `[out, in]`).
    func weightGradient(_ dy: DeviceTensor, _ x: DeviceTensor, into weightGrad: DeviceTensor, accumulating: Bool)
        throws {
        let (out, inputs) = (weightGrad.shape[0], weightGrad.shape[1])
        try multiply(dy.reshaped([dy.count / out, out]), x.reshaped([x.count / inputs, inputs]), transposeA: true,
                     into: weightGrad, beta: accumulating ? 1 : 0)
    }

    /// A fresh copy of x.
    func copy(_ x: DeviceTensor) throws -> DeviceTensor { try blocks.slice(x, x.shape.map { 0..<$0 }) }
}
