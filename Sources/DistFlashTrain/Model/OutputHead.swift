import DistFlashAttn
import DistFlashAttnCPU

/// The model's last stage on x `[B, n, E]` (T = B·n token rows):
/// ```
/// x̂ = RMSNorm(x)      z = x̂·W_headᵀ  [T, V]      loss = CrossEntropy(z, labels) / N
/// ```
/// The logits are never kept whole: both passes compute them `chunkRows` token rows at a time, the forward
/// keeping only each row's LSE, the backward recomputing the chunk's logits to form dz and
/// ```
/// dx̂ = dz·W_head        dW_head += dzᵀ·x̂
/// ```
struct OutputHead {
    let config: ModelConfig
    let parameters: Parameters
    let cpu: CPUBackend

    var normWeight: Tensor { parameters.tensors[config.finalNormSlot] }
    var outputWeight: Tensor { parameters.tensors[config.outputSlot] }

    /// Token rows per logits chunk: about 2²² floats (16 MiB) of logits, at least 64 rows.
    var chunkRows: Int { max(64, (1 << 22) / config.vocab) }

    func chunks(_ rows: Int) -> [Range<Int>] {
        stride(from: 0, to: rows, by: chunkRows).map { $0..<min($0 + chunkRows, rows) }
    }

    /// The loss, the number of labelled tokens whose top logit is their label, and what the backward needs.
    func forward(_ x: Tensor, labels: [Int32], normalizer: Int) throws
        -> (loss: Double, correct: Int, saved: HeadActivations) {
        let (normed, inverseRMS) = try RMSNorm.forward(x, weight: normWeight, epsilon: config.normEps)
        var loss = 0.0, correct = 0
        var logSumExp = [Float](repeating: 0, count: labels.count)
        for rows in chunks(labels.count) {
            let logits = try Linear.forward(normed.rows(rows), weight: outputWeight, on: cpu)
            let chunk = try CrossEntropy.forward(logits: logits, labels: Array(labels[rows]), normalizer: normalizer)
            loss += chunk.loss
            correct += try CrossEntropy.correctPredictions(logits: logits, labels: Array(labels[rows]))
            logSumExp[rows] = chunk.logSumExp[...]
        }
        return (loss, correct, HeadActivations(input: x, inverseRMS: inverseRMS, normed: normed, logSumExp: logSumExp))
    }

    /// dx `[B, n, E]`; adds dW_head and the final norm's dw into `grads`.
    func backward(_ saved: HeadActivations, labels: [Int32], normalizer: Int, into grads: inout Parameters) throws
        -> Tensor {
        var normedGrad = Tensor(shape: saved.normed.shape)
        for rows in chunks(labels.count) {
            let normed = try saved.normed.rows(rows)
            let logits = try Linear.forward(normed, weight: outputWeight, on: cpu)
            let logitsGrad = try CrossEntropy.backward(logits: logits, labels: Array(labels[rows]),
                                                       logSumExp: Array(saved.logSumExp[rows]), normalizer: normalizer)
            var chunkGrad = Tensor(shape: [rows.count, config.dim])
            try Linear.inputGradient(logitsGrad, weight: outputWeight, into: &chunkGrad, on: cpu)
            normedGrad.setRows(rows, from: chunkGrad)
            try Linear.accumulateWeightGradient(logitsGrad, input: normed, into: &grads.tensors[config.outputSlot],
                                                on: cpu)
        }
        var inputGrad = Tensor(shape: saved.input.shape)
        try RMSNorm.backward(saved.input, inverseRMS: saved.inverseRMS, weight: normWeight, outputGrad: normedGrad,
                             inputGrad: &inputGrad, weightGrad: &grads.tensors[config.finalNormSlot])
        return inputGrad
    }
}
