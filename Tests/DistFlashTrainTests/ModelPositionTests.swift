import DistFlashAttn
import Testing
@testable import DistFlashTrain

@Suite("RoPE and the mask follow the positions passed in, not the order of the shard")
struct ModelPositionTests {
    /// Shuffling the shard's tokens together with their labels and positions changes nothing per token: the final
    /// hidden state of each token, the loss and the gradients agree (up to float32 summation order).
    /// Shuffling the tokens but keeping the positions contiguous must change the result (the control).
    @Test func permutedShardGivesTheSameResultsPerToken() throws {
        let fixture = try ModelFixture(batch: 1)
        let n = fixture.shard.sequence
        let (model, _) = fixture.model()
        var random = SeededRandom(seed: fixture.seed ^ 0x5EED)
        let permutation = Array(0..<n).shuffled(using: &random)
        let permuted = TokenBatch(batch: 1, sequence: n, tokens: permutation.map { fixture.shard.tokens[$0] },
                                  labels: permutation.map { fixture.shard.labels[$0] })

        func run(_ shard: TokenBatch, _ positions: [Int]) throws -> (loss: Double, hidden: Tensor, grads: Parameters) {
            let (loss, cache) = try model.forward(shard, positions: positions, lossNormalizer: fixture.normalizer,
                                                  parameters: fixture.parameters)
            let hidden = cache.head.normed
            return (loss, hidden, try model.backward(cache))
        }
        let contiguous = try run(fixture.shard, fixture.positions)
        let shuffled = try run(permuted, permutation.map { fixture.positions[$0] })
        let control = try run(permuted, fixture.positions)

        let unshuffled = Tensor(shape: shuffled.hidden.shape).scattered(shuffled.hidden, to: permutation)
        let hiddenError = zip(unshuffled.scalars, contiguous.hidden.scalars).map { abs($0 - $1) }.max()!
        print("seed \(fixture.seed): per-token hidden max error \(hiddenError)")
        #expect(hiddenError <= 1e-5)
        #expect(abs(shuffled.loss - contiguous.loss) <= 1e-6 * max(1, contiguous.loss))
        for (i, name) in contiguous.grads.names.enumerated() {
            let scale = contiguous.grads.tensors[i].scalars.map(abs).max()!
            let worst = zip(shuffled.grads.tensors[i].scalars, contiguous.grads.tensors[i].scalars).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-5 * max(1, scale), "seed \(fixture.seed): d \(name) differs by \(worst)")
        }
        let controlError = zip(Tensor(shape: control.hidden.shape).scattered(control.hidden, to: permutation).scalars,
                               contiguous.hidden.scalars).map { abs($0 - $1) }.max()!
        #expect(controlError > 1e-2, "seed \(fixture.seed): positions seem to be ignored")
    }
}

private extension Tensor {
    /// Row i of `source` (axis 1 of `[B, n, E]`) written to row `indices[i]`.
    func scattered(_ source: Tensor, to indices: [Int]) -> Tensor {
        var copy = self
        copy.scatter(source, to: indices, axis: 1)
        return copy
    }
}
