import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Testing

/// Pieces of 0..<S: three uneven contiguous runs, and a stride-3 striping.
func splits(_ s: Int) -> [[[Int]]] {
    let a = s / 4, b = s / 2 + 7
    return [[Array(0..<a), Array(a..<b), Array(b..<s)],
            (0..<3).map { r in Array(stride(from: r, to: s, by: 3)) }]
}

func permutations<T>(_ items: [T]) -> [[T]] {
    guard items.count > 1 else { return [items] }
    return items.indices.flatMap { i -> [[T]] in
        var rest = items
        let head = rest.remove(at: i)
        return permutations(rest).map { [head] + $0 }
    }
}

@Suite("Block primitives composed in any order equal the whole")
struct BlockPrimitiveTests {
    let backend = CPUBackend()

    @Test(arguments: [AttentionMask.causal, .full, .window(30), .documents([60, 1, 142], .causal)])
    func forwardInAnyOrder(_ mask: AttentionMask) throws {
        let problem = try AttentionProblem(sequence: 203, heads: 4, kvHeads: 2, headDim: 40, mask: mask)
        let x = RandomInputs(problem)
        for pieces in splits(problem.sequence) {
            for order in permutations(pieces) {
                var folded = AttentionPartial.empty(batch: 1, sequence: 203, heads: 4, headDim: 40)
                var merged = folded
                for queries in pieces {
                    let q = x.query.gather(queries, axis: 1)
                    var running = AttentionPartial.empty(batch: 1, sequence: queries.count, heads: 4, headDim: 40)
                    var total = running
                    for keys in order {
                        let (k, v) = (x.key.gather(keys, axis: 1), x.value.gather(keys, axis: 1))
                        try backend.forward(query: q, queryPositions: queries, key: k, value: v, keyPositions: keys,
                                            mask: mask, scale: problem.scale, into: &running)
                        var alone = AttentionPartial.empty(batch: 1, sequence: queries.count, heads: 4, headDim: 40)
                        try backend.forward(query: q, queryPositions: queries, key: k, value: v, keyPositions: keys,
                                            mask: mask, scale: problem.scale, into: &alone)
                        try backend.merge(&total, with: alone)
                    }
                    folded.output.scatter(running.output, to: queries, axis: 1)
                    folded.logSumExp.scatter(running.logSumExp, to: queries, axis: 2)
                    merged.output.scatter(total.output, to: queries, axis: 1)
                    merged.logSumExp.scatter(total.logSumExp, to: queries, axis: 2)
                }
                for result in [folded, merged] {
                    let checks = ReferenceCheck.run(problem, query: x.query, key: x.key, value: x.value, result: result)
                    for check in checks { #expect(check.passed, "seed \(x.seed): \(check.summary)") }
                }
            }
        }
    }

    @Test(arguments: [AttentionMask.causal, .full, .window(30), .documents([60, 1, 142], .window(9))])
    func backwardSummedOverBlocks(_ mask: AttentionMask) throws {
        let problem = try AttentionProblem(sequence: 203, heads: 4, kvHeads: 2, headDim: 40, mask: mask)
        let x = RandomInputs(problem)
        let whole = try backend.attention(problem, query: x.query, key: x.key, value: x.value)
        let delta = try backend.backwardPreprocess(output: whole.output, outputGrad: x.outputGrad)
        for pieces in splits(problem.sequence) {
            var grads = AttentionGradients.zeros(queryShape: problem.queryShape, keyValueShape: problem.keyValueShape)
            for queries in pieces {
                for keys in pieces {
                    var part = AttentionGradients.zeros(queryShape: [1, queries.count, 4, 40],
                                                        keyValueShape: [1, keys.count, 2, 40])
                    try backend.backward(
                        query: x.query.gather(queries, axis: 1), queryPositions: queries,
                        key: x.key.gather(keys, axis: 1), value: x.value.gather(keys, axis: 1), keyPositions: keys,
                        mask: mask, scale: problem.scale, outputGrad: x.outputGrad.gather(queries, axis: 1),
                        logSumExp: whole.logSumExp.gather(queries, axis: 2), delta: delta.gather(queries, axis: 2),
                        into: &part)
                    grads.query.add(part.query, at: queries)
                    grads.key.add(part.key, at: keys)
                    grads.value.add(part.value, at: keys)
                }
            }
            let checks = ReferenceCheck.run(problem, query: x.query, key: x.key, value: x.value, result: whole,
                                            outputGrad: x.outputGrad, gradients: grads)
            for check in checks { #expect(check.passed, "seed \(x.seed): \(check.summary)") }
        }
    }

    @Test func mergeIsAssociative() throws {
        let problem = try AttentionProblem(sequence: 150, heads: 3, headDim: 24, mask: .full)
        let x = RandomInputs(problem)
        let positions = Array(0..<150)
        let parts = try splits(150)[0].map { keys -> AttentionPartial in
            var p = AttentionPartial.empty(batch: 1, sequence: 150, heads: 3, headDim: 24)
            try backend.forward(query: x.query, queryPositions: positions, key: x.key.gather(keys, axis: 1),
                                value: x.value.gather(keys, axis: 1), keyPositions: keys, mask: .full,
                                scale: problem.scale, into: &p)
            return p
        }
        var left = parts[0], right = parts[1], empty = AttentionPartial.empty(batch: 1, sequence: 150, heads: 3, headDim: 24)
        try backend.merge(&left, with: parts[1])
        try backend.merge(&left, with: parts[2])  // (a ⊕ b) ⊕ c
        try backend.merge(&right, with: parts[2])
        var a = parts[0]
        try backend.merge(&a, with: right)  // a ⊕ (b ⊕ c)
        try backend.merge(&empty, with: a)  // ∅ ⊕ x = x
        let tolerance: Float = 1e-5
        #expect(zip(left.output.scalars, a.output.scalars).allSatisfy { abs($0 - $1) <= tolerance })
        #expect(zip(left.logSumExp.scalars, a.logSumExp.scalars).allSatisfy { abs($0 - $1) <= tolerance })
        #expect(empty == a)
    }

    @Test("rows that see no key: O = 0, LSE = −∞, zero gradients, no NaN",
          arguments: [(AttentionMask.causal, Array(0..<40), Array(50..<90)),
                      (AttentionMask.window(50), Array(200..<240), Array(0..<100)),
                      (AttentionMask.documents([100, 100, 100]), Array(210..<250), Array(0..<200))])
    func emptyRows(_ mask: AttentionMask, _ queries: [Int], _ keys: [Int]) throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let q = random.normalTensor(shape: [1, queries.count, 2, 16])
        let k = random.normalTensor(shape: [1, keys.count, 1, 16]), v = random.normalTensor(shape: [1, keys.count, 1, 16])
        var partial = AttentionPartial.empty(batch: 1, sequence: queries.count, heads: 2, headDim: 16)
        try backend.forward(query: q, queryPositions: queries, key: k, value: v, keyPositions: keys, mask: mask,
                            scale: 0.25, into: &partial)
        #expect(partial.output.scalars.allSatisfy { $0 == 0 })
        #expect(partial.logSumExp.scalars.allSatisfy { $0 == -.infinity })
        var grads = AttentionGradients.zeros(queryShape: q.shape, keyValueShape: k.shape)
        let dO = random.normalTensor(shape: q.shape)
        try backend.backward(query: q, queryPositions: queries, key: k, value: v, keyPositions: keys, mask: mask,
                             scale: 0.25, outputGrad: dO, logSumExp: partial.logSumExp,
                             delta: try backend.backwardPreprocess(output: partial.output, outputGrad: dO),
                             into: &grads)
        for t in [grads.query, grads.key, grads.value] { #expect(t.scalars.allSatisfy { $0 == 0 }) }
    }

    @Test func mismatchedShapesThrow() throws {
        let q = Tensor(shape: [1, 10, 4, 8]), k = Tensor(shape: [1, 12, 3, 8])
        var partial = AttentionPartial.empty(batch: 1, sequence: 10, heads: 4, headDim: 8)
        #expect(throws: DistFlashError.self) {
            try backend.forward(query: q, queryPositions: Array(0..<10), key: k, value: k,
                                keyPositions: Array(0..<12), mask: .causal, scale: 1, into: &partial)
        }
        let k2 = Tensor(shape: [1, 12, 2, 8])
        #expect(throws: DistFlashError.self) {
            try backend.forward(query: q, queryPositions: Array(0..<9), key: k2, value: k2,
                                keyPositions: Array(0..<12), mask: .causal, scale: 1, into: &partial)
        }
    }
}

extension Tensor {
    /// Adds `part` (tokens along axis 1) into the rows at `positions`.
    mutating func add(_ part: Tensor, at positions: [Int]) {
        var current = gather(positions, axis: 1)
        for i in current.scalars.indices { current.scalars[i] += part.scalars[i] }
        scatter(current, to: positions, axis: 1)
    }
}
