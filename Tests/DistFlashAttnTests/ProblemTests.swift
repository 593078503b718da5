import DistFlashAttn
import Testing

@Suite("Problem validation names the value and the rule")
struct ProblemTests {
    /// Each bad problem and a fragment its message must contain.
    static let badProblems: [(String, @Sendable () throws -> AttentionProblem)] = [
        ("H = 6 is not divisible by kv-heads H_kv = 4", { try AttentionProblem(sequence: 8, heads: 6, kvHeads: 4, headDim: 8) }),
        ("head-dim D = 0", { try AttentionProblem(sequence: 8, heads: 2, headDim: 0) }),
        ("head-dim D = 257", { try AttentionProblem(sequence: 8, heads: 2, headDim: 257) }),
        ("batch B = 0", { try AttentionProblem(batch: 0, sequence: 8, heads: 2, headDim: 8) }),
        ("sequence S = 0", { try AttentionProblem(sequence: 0, heads: 2, headDim: 8) }),
        ("doc-lens sum to 9 but the sequence S = 8", { try AttentionProblem(sequence: 8, heads: 2, headDim: 8, mask: .documents([4, 5])) }),
        ("doc-lens[1] = 0", { try AttentionProblem(sequence: 8, heads: 2, headDim: 8, mask: .documents([8, 0])) }),
        ("window W = 0", { try AttentionProblem(sequence: 8, heads: 2, headDim: 8, mask: .window(0)) }),
        ("scale = inf", { try AttentionProblem(sequence: 8, heads: 2, headDim: 8, scale: .infinity) }),
    ]

    @Test(arguments: badProblems.indices)
    func rejected(_ index: Int) {
        let (fragment, make) = Self.badProblems[index]
        do {
            _ = try make()
            Issue.record("accepted a problem that should fail with '\(fragment)'")
        } catch let error as DistFlashError {
            #expect(error.code == .invalidProblem)
            #expect(error.message.contains(fragment), "message was: \(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func maskParsing() throws {
        #expect(try AttentionMask.parseKind("causal") == .causal)
        #expect(try AttentionMask.parseKind("full") == .full)
        #expect(try AttentionMask.parseKind("window=12") == .window(12))
        for bad in ["banded", "window=", "window=0", "window=x"] {
            #expect(throws: DistFlashError.self) { try AttentionMask.parseKind(bad) }
        }
    }

    @Test func defaultScaleAndFLOPs() throws {
        let p = try AttentionProblem(sequence: 4, heads: 2, headDim: 16)
        #expect(p.scale == 0.25)
        #expect(p.visiblePairs == 10)  // causal 4×4: 1+2+3+4
        #expect(try AttentionProblem(sequence: 4, heads: 2, headDim: 16, mask: .window(2)).visiblePairs == 7)
        #expect(try AttentionProblem(sequence: 5, heads: 2, headDim: 16, mask: .documents([2, 3], .full)).visiblePairs == 13)
        #expect(p.forwardFLOPs == 4 * 2 * 16 * 10)
    }
}

@Suite("Tile visibility is sound")
struct MaskVisibilityTests {
    /// For random position sets, `.none` must mean no visible pair and `.all` every pair visible.
    @Test(arguments: [AttentionMask.causal, .full, .window(5), .window(1), .documents([3, 1, 9, 7], .causal),
                      .documents([10, 10], .full), .documents([4, 16], .window(3))])
    func classificationMatchesPairs(_ mask: AttentionMask) {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        var sawNone = false, sawAll = false
        for _ in 0..<400 {
            let q = (0..<Int.random(in: 1...5, using: &random)).map { _ in Int.random(in: 0..<20, using: &random) }
            let k = (0..<Int.random(in: 1...5, using: &random)).map { _ in Int.random(in: 0..<20, using: &random) }
            let qd = mask.documentIndices(of: q), kd = mask.documentIndices(of: k)
            let v = mask.visibility(queries: q.min()!...q.max()!, keys: k.min()!...k.max()!,
                                    queryDocuments: qd.min()!...qd.max()!, keyDocuments: kd.min()!...kd.max()!)
            let pairs = q.flatMap { i in k.map { j in mask.allows(query: i, key: j) } }
            switch v {
            case .none: #expect(!pairs.contains(true), "q \(q) k \(k)"); sawNone = true
            case .all: #expect(!pairs.contains(false), "q \(q) k \(k)"); sawAll = true
            case .partial: break
            }
        }
        #expect(sawNone || mask == .full)
        if case .window = mask.kind {} else { #expect(sawAll) }  // all-visible random windows are rare
    }
}

@Suite struct BFloat16Tests {
    @Test func roundsToNearestEven() {
        #expect(BFloat16.round(1.0) == 1.0)
        #expect(BFloat16.round(Float(bitPattern: 0x3F80_8000)) == 1.0)  // halfway, even stays
        #expect(BFloat16.round(Float(bitPattern: 0x3F81_8000)) == Float(bitPattern: 0x3F82_0000))  // halfway, odd rounds up
        #expect(BFloat16.round(Float(bitPattern: 0x3F80_8001)) == Float(bitPattern: 0x3F81_0000))
        #expect(BFloat16.round(.infinity) == .infinity)
        #expect(BFloat16.round(.nan).isNaN)
    }

    @Test("inputs of each dtype: fp32 unchanged, bf16 keeps 8 significant bits, fp16 11 and overflows past 65504")
    func inputRounding() throws {
        let x = try Tensor(shape: [5], scalars: [1 + 0x1p-9, 1 + 0x1p-12, 65504, 65520, -.infinity])
        #expect(x.rounded(to: .fp32) == x)
        #expect(x.rounded(to: .bf16).scalars == [1, 1, 65536, 65536, -.infinity])
        #expect(x.rounded(to: .fp16).scalars == [1 + 0x1p-9, 1, 65504, .infinity, -.infinity])
        #expect(AttentionProblem.DType.fp16.inputBytes == 2 && AttentionProblem.DType.fp32.inputBytes == 4)
    }
}
