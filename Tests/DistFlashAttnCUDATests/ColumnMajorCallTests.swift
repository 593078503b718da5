import DistFlashAttn
import DistFlashAttnCUDA
import Testing

/// The row-major → column-major mapping of `DeviceMatmul`, checked on the CPU against BLAS's definition of GEMM:
/// C(i, j) = Σ_p op(X)(i, p)·op(Y)(p, j) with X(i, p) stored at x[i + p·ld] (column-major).
@Suite("cuBLAS call mapping (CPU)")
struct ColumnMajorCallTests {
    static func columnMajorGEMM(_ call: DeviceMatmul.ColumnMajorCall, _ x: [Float], _ y: [Float]) -> [Float] {
        var c = [Float](repeating: 0, count: call.leadingC * call.n)
        for i in 0..<call.m {
            for j in 0..<call.n {
                var sum: Float = 0
                for p in 0..<call.k {
                    let xv = call.transposeFirst ? x[p + i * call.leadingFirst] : x[i + p * call.leadingFirst]
                    let yv = call.transposeSecond ? y[j + p * call.leadingSecond] : y[p + j * call.leadingSecond]
                    sum += xv * yv
                }
                c[i + j * call.leadingC] = sum
            }
        }
        return c
    }

    @Test("every transpose pair gives the row-major product", arguments: [(false, false), (false, true), (true, false), (true, true)])
    func rowMajorProduct(_ transposes: (Bool, Bool)) {
        let (transposeA, transposeB) = transposes
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (m, k, n) = (5, 7, 3)
        let a = random.normalTensor(shape: transposeA ? [k, m] : [m, k])
        let b = random.normalTensor(shape: transposeB ? [n, k] : [k, n])
        let call = DeviceMatmul.columnMajorCall(a: (a.shape[0], a.shape[1]), b: (b.shape[0], b.shape[1]),
                                                transposeA: transposeA, transposeB: transposeB)
        let got = Self.columnMajorGEMM(call, b.scalars, a.scalars)  // B first, as the call is made
        for i in 0..<m {
            for j in 0..<n {
                var want: Float = 0
                for p in 0..<k {
                    want += (transposeA ? a.scalars[p * m + i] : a.scalars[i * k + p])
                        * (transposeB ? b.scalars[j * k + p] : b.scalars[p * n + j])
                }
                #expect(abs(got[i * n + j] - want) <= 1e-5 * (1 + abs(want)), "C[\(i), \(j)] transposes \(transposes)")
            }
        }
    }
}
