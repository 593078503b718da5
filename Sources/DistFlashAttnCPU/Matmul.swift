import DistFlashAttn
import _CPUKernels

extension CPUBackend {
    /// How a matrix operand lies in memory: element (i, j) is at `base[i·row + j·column]`.
    /// A row-major matrix whose rows hold `width` values has strides (width, 1); reading the same memory as its
    /// transpose is (1, width).
    public struct MatrixStrides: Sendable, Equatable {
        public var row: Int
        public var column: Int

        public init(row: Int, column: Int) {
            (self.row, self.column) = (row, column)
        }

        /// A row-major matrix with `width` columns.
        public static func rowMajor(width: Int) -> MatrixStrides { MatrixStrides(row: width, column: 1) }
        /// The transpose of a row-major matrix with `width` columns.
        public static func transposed(width: Int) -> MatrixStrides { MatrixStrides(row: 1, column: width) }
    }

    /// Dense float32 matrix product on the packed GEMM micro-kernels:
    /// ```
    /// C[M,N] = α · A[M,K] · B[K,N] + β · C[M,N]
    /// ```
    /// A and B are read through their strides, so a transposed operand costs no copy by the caller; C is
    /// row-major with row stride `ldc`. β = 0 never reads C (it may hold garbage).
    ///
    /// B is packed once into NR-column panels (in parallel), then row blocks of C are dealt out to the workers.
    /// Each task walks its rows in (N-block × K-block) pieces sized for L2: a K-block of A (copied to contiguous
    /// rows when A is not row-major) against a K-block × N-block of packed B. Row blocks are multiples of every
    /// micro-kernel's MR, so each element of C is summed in the same order whatever the number of workers, and
    /// results do not depend on it.
    public func matmul(m: Int, n: Int, k: Int, alpha: Float = 1,
                       _ a: UnsafePointer<Float>, _ aStrides: MatrixStrides,
                       _ b: UnsafePointer<Float>, _ bStrides: MatrixStrides,
                       beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        precondition(m >= 0 && n >= 0 && k >= 0 && ldc >= n, "matmul: M \(m), N \(n), K \(k), ldc \(ldc)")
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m {
                if beta == 0 { (c + i * ldc).update(repeating: 0, count: n) } else { dfa_scale(Int32(n), c + i * ldc, beta) }
            }
            return
        }
        let isa = self.isa
        let panel = Int(dfa_panel_width(isa))
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: dfa_packed_b_floats(isa, Int32(k), Int32(n)))
        defer { packed.deallocate() }
        let (bShared, packedShared) = (SharedFloats(b), SharedFloats(packed))

        // Pack B: panel j0 ..< j0 + NR of all K rows lands at packed + j0·K.
        let panels = (n + panel - 1) / panel
        let panelsPerTask = max(1, panels / (4 * workers))
        let packTasks = (panels + panelsPerTask - 1) / panelsPerTask
        parallelFor(count: packTasks, workers: k * n >= 1 << 16 ? workers : 1) { task, _ in
            let j0 = task * panelsPerTask * panel
            let columns = min(n - j0, panelsPerTask * panel)
            dfa_pack_b(isa, Int32(k), Int32(columns), bShared.base + j0 * bStrides.column, bStrides.row,
                       bStrides.column, packedShared.base + j0 * k)
        }

        // Blocks: a K-block × N-block of packed B (256 × 512 floats = 512 KiB) stays in L2 while the task's rows
        // stream past it; the row block is a multiple of every micro-kernel's MR (4, 6, 12).
        let kBlock = 256, nBlock = 512
        let rowBlock = max(12, min(96, ((m + 2 * workers - 1) / (2 * workers) + 11) / 12 * 12))
        let rowTasks = (m + rowBlock - 1) / rowBlock
        // A copied to contiguous rows gets a row stride of 272 floats, not 256: rows 1 KiB apart would map to a
        // few L1 sets and evict each other while the copy writes down a column.
        let copiedStride = kBlock + 16
        let scratch = aStrides.column == 1 ? nil : WorkerScratch(workers: workers, floats: rowBlock * copiedStride)
        let (aShared, cShared) = (SharedFloats(a), SharedFloats(c))
        parallelFor(count: rowTasks, workers: m * n * k >= 1 << 18 ? workers : 1) { task, worker in
            let i0 = task * rowBlock, rows = min(rowBlock, m - i0)
            for n0 in stride(from: 0, to: n, by: nBlock) {
                let columns = min(nBlock, n - n0)
                for k0 in stride(from: 0, to: k, by: kBlock) {
                    let depth = min(kBlock, k - k0)
                    let block: UnsafePointer<Float>, lda: Int
                    if let scratch {
                        // Gather A[i0 ..< i0 + rows, k0 ..< k0 + depth] into rows `copiedStride` apart.
                        let dst = scratch.buffer(worker)
                        for kk in 0..<depth {
                            let src = aShared.base + (k0 + kk) * aStrides.column + i0 * aStrides.row
                            for i in 0..<rows { dst[i * copiedStride + kk] = src[i * aStrides.row] }
                        }
                        (block, lda) = (UnsafePointer(dst), copiedStride)
                    } else {
                        (block, lda) = (UnsafePointer(aShared.base + i0 * aStrides.row + k0), aStrides.row)
                    }
                    dfa_gemm(isa, Int32(rows), Int32(columns), Int32(depth), alpha, block, lda,
                             packedShared.base + n0 * k + k0 * panel, Int32(k), k0 == 0 ? beta : 1,
                             cShared.base + i0 * ldc + n0, ldc)
                }
            }
        }
    }

    /// The same product on tensors viewed as matrices: a tensor's rows run over all its leading axes and its
    /// columns over the last axis, so `[B, n, E]` is a (B·n) × E matrix.
    /// ```
    /// C[M,N] = α · op(A) · op(B) + β · C      op(X) = X, or Xᵀ when transposed
    /// ```
    /// `c` may have any shape holding M·N values; it is written as a row-major M × N matrix.
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                       alpha: Float = 1, beta: Float = 0, into c: inout Tensor) throws {
        let (aRows, aColumns) = try matrixSize(a, "A"), (bRows, bColumns) = try matrixSize(b, "B")
        let (m, k) = transposeA ? (aColumns, aRows) : (aRows, aColumns)
        let (kB, n) = transposeB ? (bColumns, bRows) : (bRows, bColumns)
        guard k == kB else {
            throw DistFlashError(.shapeMismatch, "matmul: op(A) is \(m)×\(k) (A \(a.shape)) but op(B) is \(kB)×\(n) "
                + "(B \(b.shape)): the inner sizes must agree")
        }
        guard c.count == m * n else {
            throw DistFlashError(.shapeMismatch, "matmul: C has shape \(c.shape), it must hold the \(m)×\(n) result")
        }
        if m == 0 || n == 0 { return }
        if k == 0 {  // an empty sum: C = β·C
            for i in c.scalars.indices { c.scalars[i] = beta == 0 ? 0 : beta * c.scalars[i] }
            return
        }
        let aStrides: MatrixStrides = transposeA ? .transposed(width: aColumns) : .rowMajor(width: aColumns)
        let bStrides: MatrixStrides = transposeB ? .transposed(width: bColumns) : .rowMajor(width: bColumns)
        a.scalars.withUnsafeBufferPointer { aBuffer in
            b.scalars.withUnsafeBufferPointer { bBuffer in
                c.scalars.withUnsafeMutableBufferPointer { cBuffer in
                    matmul(m: m, n: n, k: k, alpha: alpha, aBuffer.baseAddress!, aStrides, bBuffer.baseAddress!,
                           bStrides, beta: beta, cBuffer.baseAddress!, ldc: n)
                }
            }
        }
    }

    /// `op(A) · op(B)` as a new tensor of `shape` (default `[M, N]`).
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                       shape: [Int]? = nil) throws -> Tensor {
        let (aSize, bSize) = (try matrixSize(a, "A"), try matrixSize(b, "B"))
        let m = transposeA ? aSize.columns : aSize.rows
        let n = transposeB ? bSize.rows : bSize.columns
        var c = Tensor(shape: shape ?? [m, n])
        try matmul(a, b, transposeA: transposeA, transposeB: transposeB, into: &c)
        return c
    }

    private func matrixSize(_ t: Tensor, _ name: String) throws -> (rows: Int, columns: Int) {
        guard let columns = t.shape.last else {
            throw DistFlashError(.shapeMismatch, "matmul: \(name) is a scalar, it must have at least one axis")
        }
        return (t.shape.dropLast().reduce(1, *), columns)
    }
}
