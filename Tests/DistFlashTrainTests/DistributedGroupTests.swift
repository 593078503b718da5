import DistFlashAttn
import DistFlashAttnCPU
import Testing
@testable import DistFlashTrain

/// P ranks as threads: the group's model gradients (all-reduced) equal one device's, for every plan.
@Suite struct DistributedGroupTests {
    @Test func allReduceGivesTheSameSumOnEveryRank() throws {
        let problem = try AttentionProblem(sequence: 11, heads: 2, headDim: 4)
        let group = try SequenceParallelGroup(plan: .ring, ranks: 3, problem: problem) { _ in CPUBackend(workers: 1) }
        let sums = try group.run { context in
            let mine = try Tensor(shape: [3], scalars: [Float(context.rank), 0.1, Float(context.rank * context.rank)])
            return try context.allReduceSum([mine])[0].scalars + [Float(try context.allReduceSum(1.0 / 3.0))]
        }
        for sum in sums { #expect(sum == sums[0]) }
        #expect(sums[0][0] == 3 && abs(sums[0][1] - 0.3) < 1e-6 && sums[0][2] == 5 && abs(sums[0][3] - 1) < 1e-6)
    }

    @Test(arguments: Plan.Kind.allCases)
    func modelGradientsEqualOneDevice(plan: Plan.Kind) throws {
        let fixture = try ModelFixture(batch: 1, n: 29)
        let config = fixture.config
        // The whole sequence at positions 0..<S, labels everywhere they are given.
        let full = fixture.shard
        let (single, _) = fixture.model()
        let (loss, cache) = try single.forward(full, positions: Array(0..<full.sequence),
                                                lossNormalizer: full.labeledCount, parameters: fixture.parameters)
        let expected = try single.backward(cache)

        let problem = try AttentionProblem(sequence: full.sequence, heads: config.heads, kvHeads: config.kvHeads,
                                           headDim: config.headDim)
        let group = try SequenceParallelGroup(plan: plan, ranks: 3, problem: problem) { _ in CPUBackend(workers: 1) }
        let parameters = fixture.parameters
        let results = try group.run { context in
            let model = LlamaModel(config: config, attention: context.attention, checkpoint: .remat,
                                   cpu: CPUBackend(workers: 1))
            let shard = try context.shard(full)
            let (loss, cache) = try model.forward(shard, positions: context.positions,
                                                  lossNormalizer: full.labeledCount, parameters: parameters)
            let grads = try model.backward(cache)
            return (try context.allReduceSum(loss), try context.allReduceSum(grads.tensors))
        }
        #expect(abs(results[0].0 - loss) <= 1e-5 * max(1, abs(loss)), "loss \(results[0].0) vs \(loss)")
        for (rank, result) in results.enumerated() {
            #expect(result.1 == results[0].1, "rank \(rank) holds different reduced gradients")
        }
        for (name, (ours, reference)) in zip(expected.names, zip(results[0].1, expected.tensors)) {
            let scale = reference.scalars.map(abs).max() ?? 0
            let error = zip(ours.scalars, reference.scalars).map { abs($0 - $1) }.max() ?? 0
            #expect(error <= 1e-4 * max(scale, 1e-3), "\(plan) \(name): max error \(error), max |g| \(scale)")
        }
    }
}
