import DistFlashAttn
import DistFlashAttnCPU
import Testing
@testable import DistFlashTrain

/// Odd sizes on purpose: n = 37 tokens, E = 24, H = 6, H_kv = 2, D = 4, F = 40, V = 29.
private enum Size {
    static let (n, dim, heads, kvHeads, headDim, ffn, vocab) = (37, 24, 6, 2, 4, 40, 29)
}

private func randomTensor(_ shape: [Int], _ random: inout SeededRandom, scale: Float = 1, offset: Float = 0) -> Tensor {
    var t = random.normalTensor(shape: shape)
    for i in t.scalars.indices { t.scalars[i] = offset + scale * t.scalars[i] }
    return t
}

/// Distinct global positions in 0 ..< 5000, shuffled: a shard that is neither contiguous nor sorted.
private func scatteredPositions(_ n: Int, _ random: inout SeededRandom) -> [Int] {
    var positions = Set<Int>()
    while positions.count < n { positions.insert(Int(random.next() % 5000)) }
    return Array(positions).shuffled(using: &random)
}

private struct LinearCase: LayerCase {
    let name = "Linear"
    let inputs: [(name: String, tensor: Tensor)]
    let cpu = CPUBackend(workers: 2)
    init(_ random: inout SeededRandom) {
        inputs = [("x", randomTensor([Size.n, Size.dim], &random)), ("W", randomTensor([Size.ffn, Size.dim], &random))]
    }
    func forward(_ t: [Tensor]) throws -> Tensor { try Linear.forward(t[0], weight: t[1], on: cpu) }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        var (dx, dw) = (Tensor(shape: t[0].shape), Tensor(shape: t[1].shape))
        try Linear.inputGradient(outputGrad, weight: t[1], into: &dx, on: cpu)
        try Linear.accumulateWeightGradient(outputGrad, input: t[0], into: &dw, on: cpu)
        return [dx, dw]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] {
        ReferenceMath.linear(t[0], t[1], inputs: Size.dim, outputs: Size.ffn)
    }
}

private struct RMSNormCase: LayerCase {
    let name = "RMSNorm"
    let inputs: [(name: String, tensor: Tensor)]
    init(_ random: inout SeededRandom) {
        inputs = [("x", randomTensor([1, Size.n, Size.dim], &random, scale: 2)),
                  ("w", randomTensor([Size.dim], &random, scale: 0.3, offset: 1))]
    }
    func forward(_ t: [Tensor]) throws -> Tensor { try RMSNorm.forward(t[0], weight: t[1], epsilon: 1e-5).output }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        let r = try RMSNorm.forward(t[0], weight: t[1], epsilon: 1e-5).inverseRMS
        var (dx, dw) = (Tensor(shape: t[0].shape), Tensor(shape: t[1].shape))
        try RMSNorm.backward(t[0], inverseRMS: r, weight: t[1], outputGrad: outputGrad, inputGrad: &dx, weightGrad: &dw)
        return [dx, dw]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] { ReferenceMath.rmsNorm(t[0], t[1], epsilon: 1e-5) }
}

private struct RotaryCase: LayerCase {
    let name = "RoPE"
    let inputs: [(name: String, tensor: Tensor)]
    let positions: [Int]
    let rope: RotaryEmbedding
    init(_ random: inout SeededRandom) throws {
        inputs = [("x", randomTensor([2, Size.n, Size.heads, Size.headDim], &random))]
        positions = scatteredPositions(Size.n, &random)
        rope = try RotaryEmbedding(positions: positions, headDim: Size.headDim, theta: 10_000)
    }
    func forward(_ t: [Tensor]) throws -> Tensor {
        var x = t[0]
        try rope.apply(to: &x)
        return x
    }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        var dx = outputGrad
        try rope.applyBackward(to: &dx)
        return [dx]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] {
        ReferenceMath.rope(t[0], positions: positions, heads: Size.heads, headDim: Size.headDim, theta: 10_000)
    }
}

private struct SwiGLUCase: LayerCase {
    let name = "SwiGLU"
    let inputs: [(name: String, tensor: Tensor)]
    init(_ random: inout SeededRandom) {
        inputs = [("gate", randomTensor([Size.n, Size.ffn], &random, scale: 3)),
                  ("up", randomTensor([Size.n, Size.ffn], &random))]
    }
    func forward(_ t: [Tensor]) throws -> Tensor { try SwiGLU.forward(gate: t[0], up: t[1]) }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        let grads = try SwiGLU.backward(gate: t[0], up: t[1], outputGrad: outputGrad)
        return [grads.gate, grads.up]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] { ReferenceMath.swiglu(gate: t[0], up: t[1]) }
}

private struct CrossEntropyCase: LayerCase {
    let name = "CrossEntropy"
    let inputs: [(name: String, tensor: Tensor)]
    let labels: [Int32]
    /// Larger than this shard's labelled count: the other ranks' tokens.
    let normalizer: Int
    init(_ random: inout SeededRandom) {
        inputs = [("z", randomTensor([Size.n, Size.vocab], &random, scale: 3))]
        labels = (0..<Size.n).map { _ in random.next() % 4 == 0 ? -1 : Int32(random.next() % UInt64(Size.vocab)) }
        normalizer = labels.filter { $0 >= 0 }.count + 11
    }
    func forward(_ t: [Tensor]) throws -> Tensor {
        Tensor(shape: [1], repeating: Float(try CrossEntropy.forward(logits: t[0], labels: labels, normalizer: normalizer).loss))
    }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        let lse = try CrossEntropy.forward(logits: t[0], labels: labels, normalizer: normalizer).logSumExp
        var dz = try CrossEntropy.backward(logits: t[0], labels: labels, logSumExp: lse, normalizer: normalizer)
        for i in dz.scalars.indices { dz.scalars[i] *= outputGrad.scalars[0] }
        return [dz]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] {
        [ReferenceMath.crossEntropy(t[0], labels: labels, vocab: Size.vocab, normalizer: normalizer)]
    }
}

private struct EmbeddingCase: LayerCase {
    let name = "Embedding"
    let inputs: [(name: String, tensor: Tensor)]
    /// `[2, n]`, with repeats (the scatter-add must sum them).
    let tokens: [Int32]
    init(_ random: inout SeededRandom) {
        inputs = [("W", randomTensor([Size.vocab, Size.dim], &random))]
        tokens = (0..<2 * Size.n).map { _ in Int32(random.next() % UInt64(Size.vocab)) }
    }
    func forward(_ t: [Tensor]) throws -> Tensor { try Embedding.forward(tokens: tokens, batch: 2, table: t[0]) }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        var dw = Tensor(shape: t[0].shape)
        Embedding.backward(tokens: tokens, outputGrad: outputGrad, tableGrad: &dw)
        return [dw]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] {
        tokens.flatMap { t[0][Int($0) * Size.dim..<(Int($0) + 1) * Size.dim] }
    }
}

/// `LocalAttention` on a shuffled, gapped shard, B = 2, GQA 6/2: the operator's backward against finite
/// differences of naive causal attention by positions.
private struct AttentionCase: LayerCase {
    let name = "LocalAttention"
    let inputs: [(name: String, tensor: Tensor)]
    let positions: [Int]
    let attention = LocalAttention(backend: CPUBackend(workers: 2))
    init(_ random: inout SeededRandom) {
        inputs = [("q", randomTensor([2, Size.n, Size.heads, Size.headDim], &random)),
                  ("k", randomTensor([2, Size.n, Size.kvHeads, Size.headDim], &random)),
                  ("v", randomTensor([2, Size.n, Size.kvHeads, Size.headDim], &random))]
        positions = scatteredPositions(Size.n, &random)
    }
    func forward(_ t: [Tensor]) throws -> Tensor {
        try attention.forward(query: t[0], key: t[1], value: t[2], positions: positions).output
    }
    func backward(_ t: [Tensor], outputGrad: Tensor) throws -> [Tensor] {
        let result = try attention.forward(query: t[0], key: t[1], value: t[2], positions: positions)
        let grads = try attention.backward(query: t[0], key: t[1], value: t[2], positions: positions, result: result,
                                           outputGrad: outputGrad)
        return [grads.query, grads.key, grads.value]
    }
    func reference<R: ReferenceScalar>(_ t: [[R]]) -> [R] {
        ReferenceMath.attention(query: t[0], key: t[1], value: t[2], positions: positions, heads: Size.heads,
                                kvHeads: Size.kvHeads, headDim: Size.headDim)
    }
}

@Suite("Every layer's forward and backward against float64 finite differences")
struct LayerGradientTests {
    private func random() -> SeededRandom { SeededRandom(seed: UInt64.random(in: 0...UInt64.max)) }

    @Test func linear() throws {
        var r = random()
        try checkLayer(LinearCase(&r))
    }

    @Test func rmsNorm() throws {
        var r = random()
        try checkLayer(RMSNormCase(&r))
    }

    @Test func rotaryEmbeddingAtScatteredPositions() throws {
        var r = random()
        try checkLayer(try RotaryCase(&r))
    }

    @Test func swiglu() throws {
        var r = random()
        try checkLayer(SwiGLUCase(&r))
    }

    @Test func crossEntropyIgnoresUnlabelledTokens() throws {
        var r = random()
        try checkLayer(CrossEntropyCase(&r))
    }

    @Test func embeddingScatterAdds() throws {
        var r = random()
        try checkLayer(EmbeddingCase(&r))
    }

    @Test func localAttentionOnAShuffledShard() throws {
        var r = random()
        let layer = AttentionCase(&r)
        try checkLayer(layer)
        #expect(layer.attention.forwardCalls == 2 && layer.attention.backwardCalls == 1)
    }

    @Test func rotaryEmbeddingIsIdentityAtZeroAndRoundTrips() throws {
        // At position 0 every angle is 0; rotating by +θ then −θ (forward, then backward) restores x.
        var r = random()
        let x = r.normalTensor(shape: [1, 3, 2, 8])
        var y = x
        try RotaryEmbedding(positions: [0, 0, 0], headDim: 8, theta: 10_000).apply(to: &y)
        #expect(y == x)
        let rope = try RotaryEmbedding(positions: [5, 900, 17], headDim: 8, theta: 10_000)
        try rope.apply(to: &y)
        try rope.applyBackward(to: &y)
        let worst = zip(x.scalars, y.scalars).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-5)
    }

    @Test func invalidInputsThrow() throws {
        let table = Tensor(shape: [4, 2])
        #expect(throws: DistFlashError.self) { try Embedding.forward(tokens: [0, 4], batch: 1, table: table) }
        #expect(throws: DistFlashError.self) {
            try CrossEntropy.forward(logits: Tensor(shape: [2, 3]), labels: [0, -2], normalizer: 1)
        }
        #expect(throws: DistFlashError.self) {
            try CrossEntropy.forward(logits: Tensor(shape: [2, 3]), labels: [0, 1], normalizer: 0)
        }
        #expect(throws: DistFlashError.self) { try RotaryEmbedding(positions: [0], headDim: 3, theta: 10_000) }
    }
}
