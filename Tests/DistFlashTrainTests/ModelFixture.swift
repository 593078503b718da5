import DistFlashAttn
import DistFlashAttnCPU
@testable import DistFlashTrain

/// A small model with odd sizes (n = 37, E = 24, H = 6, D = 4, F = 40, V = 29, 2 layers), fresh random
/// parameters scaled so that every part of the network matters (matrices N(0, 1/in), norm gains 1 ± 0.2), and a
/// random shard of B = 2 rows with a quarter of the labels −1.
struct ModelFixture {
    let seed: UInt64
    let config: ModelConfig
    let parameters: Parameters
    let shard: TokenBatch
    /// Sorted global positions with gaps (a striped-like shard).
    let positions: [Int]
    /// The shard's labelled tokens plus some of "other ranks".
    let normalizer: Int

    init(kvHeads: Int = 2, batch: Int = 2, n: Int = 37, seed: UInt64 = UInt64.random(in: 0...UInt64.max)) throws {
        self.seed = seed
        config = try ModelConfig(vocab: 29, dim: 24, layers: 2, heads: 6, kvHeads: kvHeads, headDim: 4, ffnDim: 40)
        var random = SeededRandom(seed: seed)
        parameters = Parameters(config.parameterSpecs.map { spec in
            var t = random.normalTensor(shape: spec.shape)
            let scale = spec.shape.count == 1 ? 0.2 : 1 / Float(spec.shape[1]).squareRoot()
            for i in t.scalars.indices { t.scalars[i] = (spec.shape.count == 1 ? 1 : 0) + scale * t.scalars[i] }
            return (spec.name, t)
        })
        let vocab = UInt64(config.vocab)
        let tokens = (0..<batch * n).map { _ in Int32(random.next() % vocab) }
        let labels = (0..<batch * n).map { _ in random.next() % 4 == 0 ? -1 : Int32(random.next() % vocab) }
        shard = TokenBatch(batch: batch, sequence: n, tokens: tokens, labels: labels)
        var position = 0
        positions = (0..<n).map { _ in
            position += 1 + Int(random.next() % 3)
            return position
        }
        normalizer = shard.labeledCount + 7
    }

    func model(_ strategy: CheckpointStrategy = .remat) -> (LlamaModel, LocalAttention) {
        let attention = LocalAttention(backend: CPUBackend(workers: 2))
        return (LlamaModel(config: config, attention: attention, checkpoint: strategy, cpu: CPUBackend(workers: 2)),
                attention)
    }
}
