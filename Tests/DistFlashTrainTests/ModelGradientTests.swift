import DistFlashAttn
import DistFlashAttnReference
import Testing
@testable import DistFlashTrain

@Suite("The model's loss and gradients against a float64 reference")
struct ModelGradientTests {
    /// MHA (6/6), GQA (6/2) and MQA (6/1).
    @Test(arguments: [6, 2, 1])
    func lossAndGradientsMatchReference(kvHeads: Int) throws {
        let fixture = try ModelFixture(kvHeads: kvHeads)
        let (model, _) = fixture.model(.remat)
        let (loss, cache) = try model.forward(fixture.shard, positions: fixture.positions,
                                              lossNormalizer: fixture.normalizer, parameters: fixture.parameters)
        let grads = try model.backward(cache)

        let reference = tracedModel(fixture.config, fixture.parameters, fixture.shard, positions: fixture.positions,
                                    normalizer: fixture.normalizer, as: Double.self)
        let naive = tracedModel(fixture.config, fixture.parameters, fixture.shard, positions: fixture.positions,
                                normalizer: fixture.normalizer, as: Float.self)
        var checks = [ToleranceCheck("loss", ours: [loss], baseline: [naive.loss], reference: [reference.loss])]
        for (i, name) in grads.names.enumerated() {
            checks.append(ToleranceCheck("d " + name, ours: grads.tensors[i].scalars, baseline: naive.grads[i],
                                         reference: reference.grads[i]))
        }
        for check in checks {
            print("seed \(fixture.seed) H_kv=\(kvHeads): \(check.summary)")
            #expect(check.passed, "seed \(fixture.seed): \(check.summary)")
        }
        // Gradients that are not all ~0, or the comparison would prove little.
        #expect(reference.grads.allSatisfy { $0.contains { abs($0) > 1e-4 } })
    }

    /// Each batch row as a separate "rank" with the global normaliser: the ranks' losses add up to the loss of
    /// the whole batch, and their gradients to its gradient.
    @Test func shardLossesSumToTheGlobalMean() throws {
        let fixture = try ModelFixture(batch: 2)
        let (model, _) = fixture.model()
        let n = fixture.shard.sequence
        let (whole, wholeCache) = try model.forward(fixture.shard, positions: fixture.positions,
                                                    lossNormalizer: fixture.normalizer, parameters: fixture.parameters)
        let wholeGrads = try model.backward(wholeCache)
        var lossSum = 0.0
        var gradSum = fixture.parameters.zeros()
        for row in 0..<2 {
            let rows = row * n..<(row + 1) * n
            let part = TokenBatch(batch: 1, sequence: n, tokens: Array(fixture.shard.tokens[rows]),
                                  labels: Array(fixture.shard.labels[rows]))
            let (loss, cache) = try model.forward(part, positions: fixture.positions, lossNormalizer: fixture.normalizer,
                                                  parameters: fixture.parameters)
            lossSum += loss
            try model.backward(cache, into: &gradSum)
        }
        #expect(abs(lossSum - whole) <= 1e-6 * max(1, abs(whole)), "seed \(fixture.seed): \(lossSum) vs \(whole)")
        for (i, name) in wholeGrads.names.enumerated() {
            let scale = wholeGrads.tensors[i].scalars.map(abs).max()!
            let worst = zip(wholeGrads.tensors[i].scalars, gradSum.tensors[i].scalars).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-5 * max(1, scale), "seed \(fixture.seed): d \(name) differs by \(worst)")
        }
    }

    @Test func mismatchedParametersAndPositionsThrow() throws {
        let fixture = try ModelFixture()
        let (model, _) = fixture.model()
        var reordered = fixture.parameters.names.indices.map { (fixture.parameters.names[$0], fixture.parameters.tensors[$0]) }
        reordered.swapAt(1, 2)
        #expect(throws: DistFlashError.self) {
            try model.forward(fixture.shard, positions: fixture.positions, lossNormalizer: fixture.normalizer,
                              parameters: Parameters(reordered))
        }
        #expect(throws: DistFlashError.self) {
            try model.forward(fixture.shard, positions: Array(fixture.positions.dropLast()),
                              lossNormalizer: fixture.normalizer, parameters: fixture.parameters)
        }
    }
}
