import DistFlashAttn
import Testing
@testable import DistFlashTrain

@Suite("Model configuration, presets and parameters")
struct ModelConfigTests {
    @Test(arguments: ModelConfig.presetNames)
    func presetsAreValidAndCountTheirParameters(name: String) throws {
        let config = try ModelConfig.preset(name, vocab: 61)
        let counted = config.parameterSpecs.reduce(0) { $0 + $1.shape.reduce(1, *) }
        #expect(config.parameterCount == counted)
        #expect(config.parameterSpecs.count == 3 + 9 * config.layers)
    }

    @Test func llamaPresetsHaveTheirClassSizes() throws {
        let oneB = try ModelConfig.llama1b()
        #expect([oneB.dim, oneB.layers, oneB.heads, oneB.kvHeads, oneB.headDim, oneB.ffnDim, oneB.vocab]
            == [2048, 16, 32, 8, 64, 8192, 32_000])
        #expect(oneB.parameterCount == 1_104_218_112)
        #expect((120_000_000...130_000_000).contains(try ModelConfig.llama125m().parameterCount))
        #expect(throws: DistFlashError.self) { try ModelConfig.preset("tiny") }
        #expect(throws: DistFlashError.self) { try ModelConfig.preset("huge", vocab: 10) }
    }

    @Test func validationNamesTheValueAndTheRule() {
        func message(_ build: () throws -> ModelConfig) -> String {
            do {
                _ = try build()
                return ""
            } catch { return "\(error)" }
        }
        let kvHeads = message { try ModelConfig(vocab: 8, dim: 24, layers: 1, heads: 6, kvHeads: 4, headDim: 4, ffnDim: 8) }
        #expect(kvHeads.contains("H_kv = 4") && kvHeads.contains("divide H"))
        let dim = message { try ModelConfig(vocab: 8, dim: 25, layers: 1, heads: 6, kvHeads: 2, headDim: 4, ffnDim: 8) }
        #expect(dim.contains("E = 25") && dim.contains("H·D = 24"))
        let odd = message { try ModelConfig(vocab: 8, dim: 15, layers: 1, heads: 5, kvHeads: 1, headDim: 3, ffnDim: 8) }
        #expect(odd.contains("D = 3") && odd.contains("even"))
    }

    @Test func initialParametersAreDeterministicWithHuggingFaceNames() throws {
        let config = try ModelConfig.tiny(vocab: 50)
        let a = config.initialParameters(seed: 7), b = config.initialParameters(seed: 7)
        #expect(a == b)
        #expect(a != config.initialParameters(seed: 8))
        try config.validate(a)
        #expect(a.names.first == "model.embed_tokens.weight" && a.names.last == "lm_head.weight")
        #expect(a["model.layers.1.self_attn.k_proj.weight"].shape == [config.kvHeads * config.headDim, config.dim])
        #expect(a["model.layers.0.mlp.down_proj.weight"].shape == [config.dim, config.ffnDim])
        #expect(a["model.norm.weight"].scalars.allSatisfy { $0 == 1 })
        let q = a["model.layers.0.self_attn.q_proj.weight"].scalars
        let std = (q.map { Double($0 * $0) }.reduce(0, +) / Double(q.count)).squareRoot()
        #expect(abs(std - 0.02) < 0.002)
    }

    @Test("initial parameters do not depend on the thread count; runs of a large matrix are not repeats")
    func initialParametersIgnoreWorkers() throws {
        // dim 96 × ffn 1536 = 147456 values: three runs of 2¹⁶, the last one partial.
        let config = try ModelConfig(vocab: 11, dim: 96, layers: 1, heads: 4, kvHeads: 2, headDim: 24, ffnDim: 1536)
        let one = config.initialParameters(seed: 3, workers: 1), three = config.initialParameters(seed: 3, workers: 3)
        #expect(one == three)
        let up = one["model.layers.0.mlp.up_proj.weight"].scalars
        #expect(up.count == 147_456)
        #expect(Array(up[0..<64]) != Array(up[65_536..<65_600]) && Array(up[0..<64]) != Array(up[131_072..<131_136]))
    }
}
