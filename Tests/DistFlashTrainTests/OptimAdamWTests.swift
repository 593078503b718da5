import DistFlashAttn
import Testing
import DistFlashTrain

@Suite struct OptimAdamWTests {
    /// Two steps from θ = 1 with g = 0.5 then g = 0.25, η = 0.1, β = (0.9, 0.95), λ = 0.1, by hand:
    /// ```
    ///  t = 1: m = 0.05, v = 0.0125, m̂ = 0.5, v̂ = 0.25, m̂/(√v̂ + ε) = 1 − 2e-8
    ///         matrix: θ = 1 − 0.1·(1 + 0.1·1)            = 0.89
    ///         vector: θ = 1 − 0.1·1                       = 0.9
    ///  t = 2: m = 0.07, v = 0.015, m̂ = 0.07/0.19, v̂ = 0.015/0.0975, m̂/√v̂ = 0.9393021…
    ///         matrix: θ = 0.89 − 0.1·(0.9393021 + 0.1·0.89) = 0.7871707
    ///         vector: θ = 0.9 − 0.1·0.9393021               = 0.8060707
    /// ```
    @Test func twoStepsMatchTheHandComputation() throws {
        var parameters = Parameters([("w", Tensor(shape: [2, 2], repeating: 1)),
                                     ("norm", Tensor(shape: [2], repeating: 1))])
        var optimizer = try AdamW(parameters: parameters)
        var gradients = parameters.zeros()
        for g: Float in [0.5, 0.25] {
            gradients.tensors = gradients.tensors.map { Tensor(shape: $0.shape, repeating: g) }
            try optimizer.update(&parameters, gradients: gradients, learningRate: 0.1)
        }
        #expect(optimizer.state.step == 2)
        for value in parameters["w"].scalars { #expect(abs(value - 0.7871707) < 1e-6) }
        for value in parameters["norm"].scalars { #expect(abs(value - 0.8060707) < 1e-6) }
        for value in optimizer.state.m { #expect(abs(value - 0.07) < 1e-7) }
        for value in optimizer.state.v { #expect(abs(value - 0.015) < 1e-7) }
    }

    @Test func minimisesAQuadratic() throws {
        // f(θ) = ½‖θ − c‖², ∇f = θ − c; 1-D so no weight decay pulls it off c.
        let target: [Float] = [3, -2, 0.5, 7]
        var parameters = Parameters([("theta", Tensor(shape: [4]))])
        var optimizer = try AdamW(parameters: parameters)
        let schedule = try LearningRateSchedule(peak: 0.3, warmupSteps: 10, totalSteps: 400, minimumRatio: 0.01)
        for step in 0..<400 {
            var gradients = parameters.zeros()
            gradients["theta"].scalars = zip(parameters["theta"].scalars, target).map { $0 - $1 }
            try optimizer.update(&parameters, gradients: gradients, learningRate: schedule.rate(at: step))
        }
        for (value, goal) in zip(parameters["theta"].scalars, target) { #expect(abs(value - goal) < 1e-2) }
    }

    static func randomParameters(_ random: inout SeededRandom) -> Parameters {
        Parameters([
            ("model.embed_tokens.weight", random.normalTensor(shape: [7, 5])),
            ("model.layers.0.input_layernorm.weight", random.normalTensor(shape: [5])),
            ("model.layers.0.self_attn.q_proj.weight", random.normalTensor(shape: [3, 5])),
            ("model.norm.weight", random.normalTensor(shape: [5])),
            ("lm_head.weight", random.normalTensor(shape: [7, 5])),
        ])
    }

    /// P ranks, each with a replica of the parameters and an optimizer over its slice, then an all-gather of the
    /// slices, equal one optimizer over everything — bit for bit, over several steps, for awkward P.
    @Test(arguments: [1, 2, 3, 4, 5, 8, 13])
    func zeroOneShardsGatherToTheFullOptimizer(ranks: Int) throws {
        var random = SeededRandom(seed: 99)
        var full = Self.randomParameters(&random)
        var fullOptimizer = try AdamW(parameters: full)
        let shards = full.shardRanges(ranks: ranks)
        #expect(shards.first?.lowerBound == 0 && shards.last?.upperBound == full.scalarCount)
        #expect(zip(shards, shards.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        var replicas = [Parameters](repeating: full, count: ranks)
        var optimizers = try shards.map { try AdamW(parameters: full, shard: $0) }

        for step in 0..<6 {
            var gradients = full.zeros()
            gradients.tensors = gradients.tensors.map { random.normalTensor(shape: $0.shape) }
            let rate = Float(0.01) * Float(step + 1)
            try fullOptimizer.update(&full, gradients: gradients, learningRate: rate)
            for r in 0..<ranks { try optimizers[r].update(&replicas[r], gradients: gradients, learningRate: rate) }
            // All-gather: every rank receives every other rank's updated slice.
            let slices = (0..<ranks).map { replicas[$0].flatScalars(in: shards[$0]) }
            for r in 0..<ranks {
                for s in 0..<ranks { try replicas[r].setFlatScalars(slices[s], in: shards[s]) }
            }
            for replica in replicas { #expect(replica == full) }
        }
        #expect(try AdamWState.gathered(optimizers.map(\.state)) == fullOptimizer.state)
        #expect(try fullOptimizer.state.slice(shards[ranks - 1]) == optimizers[ranks - 1].state)
    }

    @Test func shardOnlyTouchesItsRange() throws {
        var random = SeededRandom(seed: 5)
        let before = Self.randomParameters(&random)
        var after = before
        let shard = 30..<50  // crosses from the embedding into the first norm weight and beyond
        var optimizer = try AdamW(parameters: before, shard: shard)
        var gradients = before.zeros()
        gradients.tensors = gradients.tensors.map { Tensor(shape: $0.shape, repeating: 1) }
        try optimizer.update(&after, gradients: gradients, learningRate: 0.1)
        let old = before.flatScalars(in: 0..<before.scalarCount), new = after.flatScalars(in: 0..<after.scalarCount)
        for i in old.indices { #expect((old[i] != new[i]) == shard.contains(i)) }
    }

    @Test func mismatchesAndBadSettingsThrow() throws {
        var parameters = Parameters([("w", Tensor(shape: [2, 2]))])
        var optimizer = try AdamW(parameters: parameters)
        let wrongShape = Parameters([("w", Tensor(shape: [4]))])
        #expect(throws: DistFlashError.self) {
            try optimizer.update(&parameters, gradients: wrongShape, learningRate: 1)
        }
        let wrongName = Parameters([("v", Tensor(shape: [2, 2]))])
        #expect(throws: DistFlashError.self) {
            try optimizer.update(&parameters, gradients: wrongName, learningRate: 1)
        }
        #expect(optimizer.state.step == 0)
        #expect(throws: DistFlashError.self) { try AdamW(parameters: parameters, shard: 2..<5) }
        #expect(throws: DistFlashError.self) {
            try AdamW(parameters: parameters, hyperparameters: .init(beta2: 1))
        }
        let a = AdamWState(shard: 0..<2), c = AdamWState(shard: 3..<4)
        #expect(throws: DistFlashError.self) { try AdamWState.gathered([a, c]) }
        #expect(throws: DistFlashError.self) { try a.slice(1..<3) }
    }
}
