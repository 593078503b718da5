import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Testing

/// One attention configuration of the test grid.
struct AttentionCase: Sendable, CustomTestStringConvertible {
    var batch: Int, sequence: Int, heads: Int, kvHeads: Int, headDim: Int
    var mask: AttentionMask

    init(batch: Int = 1, sequence: Int, heads: Int = 1, kvHeads: Int = 1, headDim: Int, mask: AttentionMask = .causal) {
        (self.batch, self.sequence, self.heads, self.kvHeads, self.headDim, self.mask) =
            (batch, sequence, heads, kvHeads, headDim, mask)
    }

    var testDescription: String {
        "B=\(batch) S=\(sequence) H=\(heads)/\(kvHeads) D=\(headDim) \(mask)"
    }

    func problem(dtype: AttentionProblem.DType = .fp32) throws -> AttentionProblem {
        try AttentionProblem(batch: batch, sequence: sequence, heads: heads, kvHeads: kvHeads, headDim: headDim,
                             mask: mask, dtype: dtype)
    }
}

/// Fresh random inputs for a problem, with the seed so a failure can be replayed.
struct RandomInputs {
    let seed: UInt64
    let query, key, value, outputGrad: Tensor

    init(_ problem: AttentionProblem, seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.seed = seed
        var random = SeededRandom(seed: seed)
        var (q, k, v, dO) = (random.normalTensor(shape: problem.queryShape),
                             random.normalTensor(shape: problem.keyValueShape),
                             random.normalTensor(shape: problem.keyValueShape),
                             random.normalTensor(shape: problem.queryShape))
        (q, k, v, dO) = (q.rounded(to: problem.dtype), k.rounded(to: problem.dtype), v.rounded(to: problem.dtype),
                         dO.rounded(to: problem.dtype))
        (query, key, value, outputGrad) = (q, k, v, dO)
    }
}

/// Runs forward and backward on `backend` and asserts the tolerance rule for O, LSE, dQ, dK, dV, printing the
/// errors first.
func expectMatchesReference(_ problem: AttentionProblem, backend: CPUBackend = CPUBackend(),
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
    let inputs = RandomInputs(problem)
    let result = try backend.attention(problem, query: inputs.query, key: inputs.key, value: inputs.value)
    let grads = try backend.attentionBackward(problem, query: inputs.query, key: inputs.key, value: inputs.value,
                                              result: result, outputGrad: inputs.outputGrad)
    let checks = ReferenceCheck.run(problem, query: inputs.query, key: inputs.key, value: inputs.value,
                                    result: result, outputGrad: inputs.outputGrad, gradients: grads)
    for check in checks {
        if !check.passed { print("seed \(inputs.seed): \(check.summary)") }
        #expect(check.passed, "seed \(inputs.seed): \(check.summary)", sourceLocation: sourceLocation)
    }
    for tensor in [grads.query, grads.key, grads.value, result.output] {
        #expect(!tensor.scalars.contains { $0.isNaN }, "seed \(inputs.seed): NaN in results",
                sourceLocation: sourceLocation)
    }
}
