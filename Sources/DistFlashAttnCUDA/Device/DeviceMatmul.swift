import DistFlashAttn

/// Row-major matrix products on one GPU through cuBLAS, ordered on the device's compute stream with every other
/// kernel: C `[M, N]` = α·op(A)·op(B) + β·C, fp32 accumulation. A and B are both bf16 or both fp32; C is fp32 or
/// bf16. A linear layer y = x·Wᵀ (W `[out, in]`) is `multiply(x, w, transposeB: true)`; its input gradient
/// dx = dy·W is `multiply(dy, w)`; its weight gradient dW += dyᵀ·x is `multiply(dy, x, transposeA: true, beta: 1)`.
public final class DeviceMatmul: @unchecked Sendable {
    // Invariant: the handles (and `lt`) are used only inside `device.exclusive`, so threads sharing the device never
    // race on them.
    public let device: CUDADevice
    private let cublas: CUBLAS
    private let handle: CUBLAS.Handle
    /// cuBLASLt with its handle and workspace, made on the first product with a separate addend.
    private var lt: LtContext?
    private static let ltWorkspaceBytes = 32 << 20

    /// cuBLASLt's state for this device: the library, a handle, a workspace, and the algorithm its heuristic chose
    /// for each product shape (asked once per shape: the query costs host time on every call otherwise).
    private final class LtContext {
        let library: CUBLASLt
        let handle: CUBLASLt.Handle
        let workspace: DeviceBuffer
        var algorithms: [String: CUBLASLt.HeuristicResult] = [:]

        init(library: CUBLASLt, handle: CUBLASLt.Handle, workspace: DeviceBuffer) {
            (self.library, self.handle, self.workspace) = (library, handle, workspace)
        }
    }

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
        if let lt { _ = lt.library.cublasLtDestroy(lt.handle) }
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
        guard let call = try Self.call(a, b, transposeA: transposeA, transposeB: transposeB, into: c) else { return }
        var (alpha, beta) = (alpha, beta)
        try device.exclusive {
            try device.makeCurrent()
            try cublas.check(cublas.cublasGemmEx(
                handle, call.transposeFirst ? CUBLAS.transpose : CUBLAS.noTranspose,
                call.transposeSecond ? CUBLAS.transpose : CUBLAS.noTranspose, Int32(call.m), Int32(call.n),
                Int32(call.k), &alpha, b.address, CUBLAS.type(b.precision), Int32(call.leadingFirst), a.address,
                CUBLAS.type(a.precision), Int32(call.leadingSecond), &beta, c.address, CUBLAS.type(c.precision),
                Int32(call.leadingC), CUBLAS.compute32F, CUBLAS.defaultAlgorithm),
                "cublasGemmEx(\(Self.describe(call)))")
        }
    }

    /// D = op(A)·op(B) + C for C and D distinct fp32 tensors of one shape (C is only read): a residual connection's
    /// h = x + O·W_oᵀ with no copy of x into h first. Through cuBLASLt and its heuristic.
    public func multiply(_ a: DeviceTensor, _ b: DeviceTensor, transposeA: Bool = false, transposeB: Bool = false,
                         adding c: DeviceTensor, into d: DeviceTensor) throws {
        guard c.shape == d.shape, c.precision == .float32, d.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "matmul: addend C \(c.precision) \(c.shape) and output D "
                + "\(d.precision) \(d.shape) must both be fp32 of one shape")
        }
        guard let call = try Self.call(a, b, transposeA: transposeA, transposeB: transposeB, into: d) else { return }
        var (alpha, beta): (Float, Float) = (1, 1)
        try device.exclusive {
            try device.makeCurrent()
            let lt = try ltState()
            let library = lt.library
            var descriptor: CUBLASLt.Handle = nil
            try library.check(library.cublasLtMatmulDescCreate(&descriptor, CUBLAS.compute32F, CUBLAS.float32),
                              "cublasLtMatmulDescCreate")
            defer { _ = library.cublasLtMatmulDescDestroy(descriptor) }
            for (attribute, transposed) in [(CUBLASLt.transposeAAttribute, call.transposeFirst),
                                            (CUBLASLt.transposeBAttribute, call.transposeSecond)] {
                var operation = transposed ? CUBLAS.transpose : CUBLAS.noTranspose
                try library.check(library.cublasLtMatmulDescSetAttribute(descriptor, attribute, &operation, 4),
                                  "cublasLtMatmulDescSetAttribute")
            }
            // Column-major layouts of the stored matrices: the first operand op(X) is m × k, the second k × n.
            let stored = [(CUBLAS.type(b.precision), call.transposeFirst ? (call.k, call.m) : (call.m, call.k),
                           call.leadingFirst),
                          (CUBLAS.type(a.precision), call.transposeSecond ? (call.n, call.k) : (call.k, call.n),
                           call.leadingSecond),
                          (CUBLAS.float32, (call.m, call.n), call.leadingC)]
            var layouts: [CUBLASLt.Handle] = []
            defer { for layout in layouts { _ = library.cublasLtMatrixLayoutDestroy(layout) } }
            for (type, (rows, columns), leading) in stored {
                var layout: CUBLASLt.Handle = nil
                try library.check(library.cublasLtMatrixLayoutCreate(&layout, type, UInt64(rows), UInt64(columns),
                                                                     Int64(leading)), "cublasLtMatrixLayoutCreate")
                layouts.append(layout)
            }
            let key = "\(call) \(a.precision) \(b.precision)"
            if lt.algorithms[key] == nil {
                lt.algorithms[key] = try Self.heuristic(lt, descriptor, layouts, call)
            }
            try withUnsafePointer(to: lt.algorithms[key]!.algorithm) { algorithm in
                try library.check(library.cublasLtMatmul(
                    lt.handle, descriptor, &alpha, b.address, layouts[0], a.address, layouts[1], &beta, c.address,
                    layouts[2], d.address, layouts[2], UnsafeRawPointer(algorithm), lt.workspace.address,
                    lt.workspace.bytes, device.stream), "cublasLtMatmul(\(Self.describe(call)) + C)")
            }
        }
    }

    /// cuBLASLt's first choice for a product, allowed the whole workspace (its implicit choice, without a
    /// preference, takes none — and measured slower than `cublasGemmEx` on the same shape).
    private static func heuristic(_ lt: LtContext, _ descriptor: CUBLASLt.Handle, _ layouts: [CUBLASLt.Handle],
                                  _ call: ColumnMajorCall) throws -> CUBLASLt.HeuristicResult {
        let library = lt.library
        var preference: CUBLASLt.Handle = nil
        try library.check(library.cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        defer { _ = library.cublasLtMatmulPreferenceDestroy(preference) }
        var bytes = UInt64(lt.workspace.bytes)
        try library.check(library.cublasLtMatmulPreferenceSetAttribute(
            preference, CUBLASLt.maxWorkspacePreference, &bytes, 8), "cublasLtMatmulPreferenceSetAttribute")
        var (result, returned) = (CUBLASLt.HeuristicResult(), Int32(0))
        try withUnsafeMutableBytes(of: &result) { bytes in
            try library.check(library.cublasLtMatmulAlgoGetHeuristic(lt.handle, descriptor, layouts[0], layouts[1],
                                                                     layouts[2], layouts[2], preference, 1,
                                                                     bytes.baseAddress!, &returned),
                              "cublasLtMatmulAlgoGetHeuristic")
        }
        guard returned > 0 else {
            throw DistFlashError(.runtime, "cuBLASLt has no algorithm for \(describe(call)) + C")
        }
        return result
    }

    /// The column-major call for C `[M, N]` = op(A)·op(B), after checking the shapes and types (nil: nothing to
    /// compute).
    private static func call(_ a: DeviceTensor, _ b: DeviceTensor, transposeA: Bool, transposeB: Bool,
                             into c: DeviceTensor) throws -> ColumnMajorCall? {
        let (aRows, aColumns) = Self.matrix(a), (bRows, bColumns) = Self.matrix(b)
        let (m, k) = transposeA ? (aColumns, aRows) : (aRows, aColumns)
        let (kB, n) = transposeB ? (bColumns, bRows) : (bRows, bColumns)
        let (cRows, cColumns) = Self.matrix(c)
        guard k == kB, cRows == m, cColumns == n else {
            throw DistFlashError(.shapeMismatch, "matmul: op(A) of \(a.shape)\(transposeA ? "ᵀ" : "") times op(B) of "
                + "\(b.shape)\(transposeB ? "ᵀ" : "") is [\(m), \(n)] only if their inner sizes agree (\(k) vs \(kB)) "
                + "and C \(c.shape) is [\(m), \(n)]")
        }
        guard a.precision == b.precision, a.precision != .float32 || c.precision == .float32 else {
            throw DistFlashError(.shapeMismatch, "matmul: A \(a.precision), B \(b.precision), C \(c.precision): A and "
                + "B must match, and fp32 operands need an fp32 C")
        }
        guard [m, n, k].allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw DistFlashError(.shapeMismatch, "matmul: [\(m), \(k)] × [\(k), \(n)] exceeds cuBLAS's 32-bit sizes")
        }
        guard m > 0, n > 0 else { return nil }
        return Self.columnMajorCall(a: (aRows, aColumns), b: (bRows, bColumns), transposeA: transposeA,
                                    transposeB: transposeB)
    }

    /// The row-major product a call computes, "[M, K] × [K, N]", for error messages.
    private static func describe(_ call: ColumnMajorCall) -> String {
        "[\(call.n), \(call.k)] × [\(call.k), \(call.m)]"
    }

    /// cuBLASLt, its handle and workspace (made once; called inside `device.exclusive`).
    private func ltState() throws -> LtContext {
        if let lt { return lt }
        let (library, workspace) = (try CUBLASLt(), try DeviceBuffer(device, bytes: Self.ltWorkspaceBytes))
        var handle: CUBLASLt.Handle = nil
        try library.check(library.cublasLtCreate(&handle), "cublasLtCreate")
        let made = LtContext(library: library, handle: handle, workspace: workspace)
        lt = made
        return made
    }

    /// op(A)·op(B) in a new tensor `[M, N]` (no fill: the product overwrites it), fp32 or — for a product only a
    /// GEMM or a kernel reading 16-bit inputs takes — rounded to `precision` from the fp32 accumulators.
    public func product(_ a: DeviceTensor, _ b: DeviceTensor, transposeA: Bool = false, transposeB: Bool = false,
                        precision: DeviceTensor.Precision = .float32) throws -> DeviceTensor {
        let (aRows, aColumns) = Self.matrix(a), (bRows, bColumns) = Self.matrix(b)
        let c = try DeviceTensor(device, shape: [transposeA ? aColumns : aRows, transposeB ? bRows : bColumns],
                                 precision: precision)
        try multiply(a, b, transposeA: transposeA, transposeB: transposeB, into: c)
        return c
    }

    /// A column-major GEMM call C = op(X)·op(Y) (X first): BLAS's m, n, k, flags and leading dimensions.
    public struct ColumnMajorCall: Sendable, Equatable {
        public var transposeFirst: Bool, transposeSecond: Bool
        public var m: Int, n: Int, k: Int
        public var leadingFirst: Int, leadingSecond: Int, leadingC: Int
    }

    /// The column-major call that computes the row-major C `[M, N]` = op(A)·op(B) for stored row-major A
    /// `(rows, columns)` and B. A row-major matrix read column-major is its transpose, so the row-major C is the
    /// column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B goes first, each keeps its own flag, and every leading dimension is
    /// the stored row length.
    public static func columnMajorCall(a: (rows: Int, columns: Int), b: (rows: Int, columns: Int), transposeA: Bool,
                                       transposeB: Bool) -> ColumnMajorCall {
        let (m, k) = transposeA ? (a.columns, a.rows) : (a.rows, a.columns)
        let n = transposeB ? b.rows : b.columns
        return ColumnMajorCall(transposeFirst: transposeB, transposeSecond: transposeA, m: n, n: m, k: k,
                               leadingFirst: b.columns, leadingSecond: a.columns, leadingC: n)
    }

    /// (rows, columns) of a tensor read as a matrix: the last axis is the columns, all others the rows.
    private static func matrix(_ tensor: DeviceTensor) -> (Int, Int) {
        let columns = tensor.shape.last ?? 1
        return (columns == 0 ? 0 : tensor.count / columns, columns)
    }
}
