import DistFlashAttn
import Testing
@testable import DistFlashTrain

@Suite("Checkpoint strategies: same gradients, different recomputation and memory")
struct ModelCheckpointTests {
    /// With a fixed worker count the CPU path is deterministic and a recomputed activation is bit-identical to
    /// the original, so all three strategies must give exactly the same loss and gradients.
    @Test(arguments: [2, 1])
    func strategiesGiveIdenticalGradients(kvHeads: Int) throws {
        let fixture = try ModelFixture(kvHeads: kvHeads)
        let layers = fixture.config.layers
        var results: [CheckpointStrategy: (loss: Double, grads: Parameters, memory: ActivationMemory)] = [:]
        for strategy in CheckpointStrategy.allCases {
            let (model, attention) = fixture.model(strategy)
            let (loss, cache) = try model.forward(fixture.shard, positions: fixture.positions,
                                                  lossNormalizer: fixture.normalizer, parameters: fixture.parameters)
            #expect(attention.forwardCalls == layers)
            var grads = fixture.parameters.zeros()
            let memory = try model.backward(cache, into: &grads)
            // The attention forward runs again only where the whole layer is recomputed.
            #expect(attention.forwardCalls == (strategy == .layer ? 2 : 1) * layers, "\(strategy)")
            #expect(attention.backwardCalls == layers)
            results[strategy] = (loss, grads, memory)
            print("\(strategy): \(memory)")
        }
        let none = results[.none]!
        for strategy in [CheckpointStrategy.layer, .remat] {
            let other = results[strategy]!
            #expect(other.loss == none.loss, "seed \(fixture.seed): \(strategy) loss")
            for (i, name) in none.grads.names.enumerated() {
                #expect(other.grads.tensors[i] == none.grads.tensors[i], "seed \(fixture.seed): \(strategy) d \(name)")
            }
        }
        // layer keeps x; remat x, O and LSE; none everything.
        let (saved, peak) = (results.mapValues(\.memory.savedBytes), results.mapValues(\.memory.peakBytes))
        #expect(saved[.layer]! < saved[.remat]! && saved[.remat]! < saved[.none]!)
        #expect(peak[.layer]! <= peak[.remat]! && peak[.remat]! <= peak[.none]!)
    }

    @Test func savedBytesFollowTheStrategy() throws {
        let fixture = try ModelFixture(batch: 1)
        let c = fixture.config
        let tokens = fixture.shard.sequence
        let (model, _) = fixture.model(.remat)
        let cache = try model.forward(fixture.shard, positions: fixture.positions, lossNormalizer: fixture.normalizer,
                                      parameters: fixture.parameters).cache
        // Per layer: x [n, E], O [n, H·D], LSE [H, n]; head: x, x̂ [n, E], r [n], LSE [n].
        let perLayer = tokens * (c.dim + c.heads * c.headDim + c.heads)
        let head = tokens * (2 * c.dim + 2)
        #expect(cache.memory.savedBytes == 4 * (c.layers * perLayer + head))
    }
}
