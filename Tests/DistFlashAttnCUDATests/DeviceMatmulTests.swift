import DistFlashAttn
import DistFlashAttnCUDA
import Testing

@Suite("cuBLAS matmul")
struct DeviceMatmulTests {
    /// Row-major op(A)·op(B) in float64 on the host.
    static func product(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> (value: [Double], scale: [Double], m: Int, n: Int) {
        let (ar, ac) = (a.shape[0], a.shape[1]), (br, bc) = (b.shape[0], b.shape[1])
        let (m, k) = transposeA ? (ac, ar) : (ar, ac)
        let n = transposeB ? br : bc
        var value = [Double](repeating: 0, count: m * n), scale = value
        for i in 0..<m {
            for j in 0..<n {
                for p in 0..<k {
                    let x = Double(transposeA ? a.scalars[p * ac + i] : a.scalars[i * ac + p])
                    let y = Double(transposeB ? b.scalars[j * bc + p] : b.scalars[p * bc + j])
                    value[i * n + j] += x * y
                    scale[i * n + j] += abs(x * y)
                }
            }
        }
        return (value, scale, m, n)
    }

    @Test("op(A)·op(B) + β·C equals the float64 product (bf16 and fp32 operands, every transpose)",
          .enabled(if: gpu != nil), arguments: [(false, false), (false, true), (true, false), (true, true)])
    func matchesHost(_ transposes: (Bool, Bool)) throws {
        let (transposeA, transposeB) = transposes
        let matmul = try DeviceMatmul(device: gpu!)
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (m, k, n) = (37, 129, 71)
        for precision in [DeviceTensor.Precision.bfloat16, .float32] {
            let round: (Tensor) -> Tensor = { precision == .bfloat16 ? $0.roundedToBFloat16() : $0 }
            let a = round(random.normalTensor(shape: transposeA ? [k, m] : [m, k]))
            let b = round(random.normalTensor(shape: transposeB ? [n, k] : [k, n]))
            let c0 = random.normalTensor(shape: [m, n])
            let c = try DeviceTensor.upload(c0, to: gpu!, as: .float32)
            try matmul.multiply(try DeviceTensor.upload(a, to: gpu!, as: precision),
                                try DeviceTensor.upload(b, to: gpu!, as: precision),
                                transposeA: transposeA, transposeB: transposeB, into: c, alpha: 0.5, beta: 1)
            let got = try c.download().scalars
            let expected = Self.product(a, b, transposeA: transposeA, transposeB: transposeB)
            // fp32 accumulation of exact products: error ≤ k·2⁻²⁴·Σ|aᵢbᵢ| (generously 4×); fp32 operands may go
            // through TF32-free fp32 GEMM, so the same bound holds.
            var worst = 0.0
            for i in 0..<(m * n) {
                let want = 0.5 * expected.value[i] + Double(c0.scalars[i])
                let bound = 4 * Double(k) * 0x1p-24 * (0.5 * expected.scale[i] + abs(Double(c0.scalars[i]))) + 1e-30
                worst = max(worst, abs(Double(got[i]) - want) / bound)
            }
            #expect(worst <= 1, "\(precision), transposes \(transposes): worst error \(worst)× the bound")
        }
    }

    @Test("op(A)·op(B) + C into a separate D equals the float64 sum and leaves C as it was (bf16, every transpose)",
          .enabled(if: gpu != nil), arguments: [(false, false), (false, true), (true, false), (true, true)])
    func separateAddend(_ transposes: (Bool, Bool)) throws {
        let (transposeA, transposeB) = transposes
        let matmul = try DeviceMatmul(device: gpu!)
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (m, k, n) = (53, 97, 45)
        let a = random.normalTensor(shape: transposeA ? [k, m] : [m, k]).roundedToBFloat16()
        let b = random.normalTensor(shape: transposeB ? [n, k] : [k, n]).roundedToBFloat16()
        let c0 = random.normalTensor(shape: [m, n])
        let c = try DeviceTensor.upload(c0, to: gpu!, as: .float32)
        let d = try DeviceTensor.upload(random.normalTensor(shape: [m, n]), to: gpu!, as: .float32)  // overwritten
        try matmul.multiply(try DeviceTensor.upload(a, to: gpu!, as: .bfloat16),
                            try DeviceTensor.upload(b, to: gpu!, as: .bfloat16),
                            transposeA: transposeA, transposeB: transposeB, adding: c, into: d)
        let got = try d.download().scalars
        let expected = Self.product(a, b, transposeA: transposeA, transposeB: transposeB)
        var worst = 0.0
        for i in 0..<(m * n) {
            let want = expected.value[i] + Double(c0.scalars[i])
            let bound = 4 * Double(k) * 0x1p-24 * (expected.scale[i] + abs(Double(c0.scalars[i]))) + 1e-30
            worst = max(worst, abs(Double(got[i]) - want) / bound)
        }
        #expect(worst <= 1, "transposes \(transposes): worst error \(worst)× the bound")
        #expect(try c.download().scalars == c0.scalars)
        #expect(throws: DistFlashError.self) {  // D of another shape than C
            try matmul.multiply(try DeviceTensor.upload(a, to: gpu!, as: .bfloat16),
                                try DeviceTensor.upload(b, to: gpu!, as: .bfloat16), transposeA: transposeA,
                                transposeB: transposeB, adding: c,
                                into: try DeviceTensor.unfilled(gpu!, shape: [m, n + 1], precision: .float32))
        }
    }

    @Test("mismatched shapes are an error that names them", .enabled(if: gpu != nil))
    func shapeMismatch() throws {
        let matmul = try DeviceMatmul(device: gpu!)
        let a = try DeviceTensor.upload(Tensor(shape: [3, 4]), to: gpu!, as: .bfloat16)
        let c = try DeviceTensor.upload(Tensor(shape: [3, 5]), to: gpu!, as: .float32)
        #expect(throws: DistFlashError.self) { try matmul.multiply(a, a, into: c) }
    }
}
