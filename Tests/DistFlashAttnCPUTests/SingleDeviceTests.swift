import DistFlashAttn
import DistFlashAttnCPU
import Testing

/// Masks worth testing at sequence length S: windows narrower and wider than S, documents of length 1.
func masks(for s: Int) -> [AttentionMask] {
    var documents: [Int] = s == 1 ? [1] : [1, s - 1]
    if s > 40 { documents = [1, 40, s - 41] }
    return [.causal, .full, .window(1), .window(20), .window(s + 500), .documents(documents),
            .documents(documents, .window(7)), .documents(documents, .full)]
}

/// Odd sizes on purpose: S ∈ {1, 2, 97}, D ∈ {1, 59, 64, 128}, H/H_kv ∈ {1/1, 6/2, 8/1}, B ∈ {1, 2}, every mask.
let smallGrid: [AttentionCase] = {
    var cases: [AttentionCase] = []
    for s in [1, 2, 97] {
        for (i, d) in [1, 59, 64, 128].enumerated() {
            for (j, (h, hkv)) in [(1, 1), (6, 2), (8, 1)].enumerated() {
                for mask in masks(for: s) {
                    cases.append(AttentionCase(batch: 1 + (i + j) % 2, sequence: s, heads: h, kvHeads: hkv,
                                               headDim: d, mask: mask))
                }
            }
        }
    }
    return cases
}()

/// S = 1025: several tiles per row and column, ragged last tiles.
let largeGrid: [AttentionCase] = [
    AttentionCase(sequence: 1025, heads: 6, kvHeads: 2, headDim: 59, mask: .causal),
    AttentionCase(sequence: 1025, heads: 6, kvHeads: 2, headDim: 59, mask: .full),
    AttentionCase(sequence: 1025, heads: 6, kvHeads: 2, headDim: 59, mask: .window(100)),
    AttentionCase(sequence: 1025, heads: 6, kvHeads: 2, headDim: 59, mask: .documents([1, 500, 524])),
    AttentionCase(sequence: 1025, heads: 8, kvHeads: 1, headDim: 128, mask: .causal),
    AttentionCase(batch: 2, sequence: 1025, heads: 2, kvHeads: 2, headDim: 64, mask: .window(2000)),
]

@Suite("Single-device attention equals the float64 reference")
struct SingleDeviceTests {
    @Test(arguments: smallGrid)
    func smallSizes(_ c: AttentionCase) throws {
        try expectMatchesReference(try c.problem())
    }

    @Test(arguments: largeGrid)
    func largeSizes(_ c: AttentionCase) throws {
        try expectMatchesReference(try c.problem())
    }

    @Test("every micro-kernel path", arguments: CPUBackend.InstructionSet.allCases)
    func instructionSets(_ isa: CPUBackend.InstructionSet) throws {
        guard isa.rawValue <= CPUBackend.InstructionSet.best.rawValue else { return }
        let backend = CPUBackend(instructionSet: isa)
        #expect(backend.instructionSet == isa)
        for c in [AttentionCase(sequence: 301, heads: 6, kvHeads: 2, headDim: 59, mask: .documents([150, 151], .window(40))),
                  AttentionCase(sequence: 200, heads: 2, kvHeads: 1, headDim: 128, mask: .causal),
                  AttentionCase(sequence: 77, heads: 1, headDim: 3, mask: .full)] {
            try expectMatchesReference(try c.problem(), backend: backend)
        }
    }

    @Test("thread counts 1 and 3 (uneven split, chunked backward)", arguments: [1, 3])
    func threadCounts(_ workers: Int) throws {
        let c = AttentionCase(sequence: 400, heads: 2, kvHeads: 1, headDim: 32, mask: .causal)
        try expectMatchesReference(try c.problem(), backend: CPUBackend(workers: workers))
    }

    @Test("bf16 and fp16 inputs", arguments: [AttentionProblem.DType.bf16, .fp16])
    func sixteenBitInputs(_ dtype: AttentionProblem.DType) throws {
        let c = AttentionCase(sequence: 129, heads: 4, kvHeads: 2, headDim: 64, mask: .window(50))
        try expectMatchesReference(try c.problem(dtype: dtype))
    }
}
