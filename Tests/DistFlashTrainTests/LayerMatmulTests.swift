import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Testing

@Suite("Packed matmul equals the float64 product")
struct LayerMatmulTests {
    /// Sizes that straddle the row (96), K (256) and N (512) blocks and every micro-kernel edge.
    static let sizes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (37, 29, 53), (101, 530, 300), (7, 3, 600)]

    @Test(arguments: CPUBackend.InstructionSet.allCases.filter { $0.rawValue <= CPUBackend.InstructionSet.best.rawValue })
    func everyTransposeAndSize(isa: CPUBackend.InstructionSet) throws {
        let cpu = CPUBackend(workers: 3, instructionSet: isa)
        var random = SeededRandom(seed: UInt64.random(in: 0...UInt64.max))
        for (m, n, k) in Self.sizes {
            for (transposeA, transposeB) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = random.normalTensor(shape: transposeA ? [k, m] : [m, k])
                let b = random.normalTensor(shape: transposeB ? [n, k] : [k, n])
                let c0 = random.normalTensor(shape: [m, n])
                let (alpha, beta): (Float, Float) = (0.75, k % 2 == 0 ? 0 : -1.5)
                var c = c0
                try cpu.matmul(a, b, transposeA: transposeA, transposeB: transposeB, alpha: alpha, beta: beta, into: &c)

                func element<T: BinaryFloatingPoint>(_ t: Tensor, _ i: Int, _ j: Int, _ transposed: Bool, _ as: T.Type) -> T {
                    let columns = t.shape[1]
                    return T(transposed ? t.scalars[j * columns + i] : t.scalars[i * columns + j])
                }
                func naive<T: BinaryFloatingPoint>(_: T.Type) -> [T] {
                    (0..<m * n).map { index in
                        let (i, j) = (index / n, index % n)
                        var sum: T = 0
                        for p in 0..<k { sum += element(a, i, p, transposeA, T.self) * element(b, p, j, transposeB, T.self) }
                        return T(alpha) * sum + T(beta) * T(c0.scalars[index])
                    }
                }
                let check = ToleranceCheck("C \(m)×\(n)×\(k) Aᵀ=\(transposeA) Bᵀ=\(transposeB) \(isa)", ours: c.scalars,
                                           baseline: naive(Float.self), reference: naive(Double.self))
                print(check.summary)
                #expect(check.passed, "\(check.summary)")
            }
        }
    }

    @Test func resultDoesNotDependOnWorkerCount() throws {
        var random = SeededRandom(seed: UInt64.random(in: 0...UInt64.max))
        let (a, b) = (random.normalTensor(shape: [211, 300]), random.normalTensor(shape: [97, 211]))
        let one = try CPUBackend(workers: 1).matmul(a, b, transposeA: true, transposeB: true)
        let three = try CPUBackend(workers: 3).matmul(a, b, transposeA: true, transposeB: true)
        #expect(one == three)
    }

    @Test func mismatchedShapesThrow() {
        #expect(throws: DistFlashError.self) {
            try CPUBackend().matmul(Tensor(shape: [3, 4]), Tensor(shape: [5, 2]))
        }
    }
}
