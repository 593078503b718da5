import DistFlashAttn

/// Row-major matrix products on one GPU through cuBLAS, ordered on the device's compute stream with every other
/// kernel: C `[M, N]` = α·op(A)·op(B) + β·C, fp32 accumulation. A and B are both bf16 or both fp32; C is fp32 or
/// bf16. A linear layer y = x·Wᵀ (W `[out, in]`) is `multiply(x, w, transposeB: true)`; its input gradient
/// dx = dy·W is `multiply(dy, w)`; its weight gradient dW += dyᵀ·x is `multiply(dy, x, transposeA: true, beta: 1)`.
public final class DeviceMatmul: @unchecked Sendable {
    // Invariant: the handle is used only inside `device.exclusive`, so threads sharing the device never race on it.
    public let device: CUDADevice
    private let cublas: CUBLAS
    private let handle: CUBLAS.Handle

    public init(device: CUDADevice) throws {
        self.device = device
        cublas = try CUBLAS()
        try device.makeCurrent()
        var handle: CUBLAS.Handle = nil
        try cublas.check(cublas.cublasCreate(&handle), "cublasCreate")
        self.handle = handle
        try cublas.check(cublas.cublasSetStream(handle, device.stream), "cublasSetStream")
    }

    deinit {
        _ = try? device.makeCurrent()
        _ = cublas.cublasDestroy(handle)
    }

    /// e.g. 130100 for cuBLAS 13.1.0.
    public var version: Int {
        var version: Int32 = 0
        _ = cublas.cublasGetVersion(handle, &version)
        return Int(version)
    }

    /// C = α·op(A)·op(B) + β·C, where op(X) is X or Xᵀ. A is `[M, K]` (`[K, M]` when transposed), B `[K, N]`
    /// (`[N, K]` when transposed), C `[M, N]`; each may have leading batch axes, flattened into its rows.
    public func multiply(_ a: DeviceTensor, _ b: DeviceTensor, transposeA: Bool = false, transposeB: Bool = false,
                         into c: DeviceTensor, alpha: Float = 1, beta: Float = 0) throws {
        let (aRows, aColumns) = Self.matrix(a), (bRows, bColumns) = Self.matrix(b)
        let (m, k) = transposeA ? (aColumns, aRows) : (aRows, aColumns)
        let (kB, n) = transposeB ? (bColumns, bRows) : (bRows, bColumns)
        let (cRows, cColumns) = Self.matrix(c)
        guard k == kB, cRows == m, cColumns == n else {
            throw DistFlashError(.shapeMismatch, "matmul: op(A) of \(a.shape)\(transposeA ? "ᵀ" : "") times op(B) of "
                + "\(b.shape)\(transposeB ? "ᵀ" : "") is [\(m), \(n)] only if their inner sizes agree (\(k) vs \(kB)) "
                + "and C \(c.shape) is [\(m), \(n)]")
        }
        guard a.precision == b.precision, a.precision == .bfloat16 || c.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "matmul: A \(a.precision), B \(b.precision), C \(c.precision): A and "
                + "B must match, and fp32 operands need an fp32 C")
        }
        guard [m, n, k].allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw DistFlashError(.shapeMismatch, "matmul: [\(m), \(k)] × [\(k), \(n)] exceeds cuBLAS's 32-bit sizes")
        }
        guard m > 0, n > 0 else { return }
        // cuBLAS is column-major: the row-major C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a
        // row-major matrix read column-major is its transpose; so B goes first, each with its own flag, and
        // every leading dimension is the stored row length.
        var (alpha, beta) = (alpha, beta)
        try device.exclusive {
            try device.makeCurrent()
            try cublas.check(cublas.cublasGemmEx(
                handle, transposeB ? CUBLAS.transpose : CUBLAS.noTranspose,
                transposeA ? CUBLAS.transpose : CUBLAS.noTranspose, Int32(n), Int32(m), Int32(k), &alpha,
                b.address, CUBLAS.type(b.precision), Int32(bColumns), a.address, CUBLAS.type(a.precision),
                Int32(aColumns), &beta, c.address, CUBLAS.type(c.precision), Int32(n), CUBLAS.compute32F,
                CUBLAS.defaultAlgorithm), "cublasGemmEx([\(m), \(k)] × [\(k), \(n)])")
        }
    }

    /// (rows, columns) of a tensor read as a matrix: the last axis is the columns, all others the rows.
    private static func matrix(_ tensor: DeviceTensor) -> (Int, Int) {
        let columns = tensor.shape.last ?? 1
        return (columns == 0 ? 0 : tensor.count / columns, columns)
    }
}
