import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain

/// The model's last stage on the GPU, as the CPU `OutputHead`: x̂ = RMSNorm(x), z = x̂·W_headᵀ, cross-entropy / N.
/// Both passes form the logits `chunkRows` token rows at a time (about 64 MiB of fp32 logits), the forward
/// keeping each row's LSE, the backward recomputing the chunk's logits for dz.
struct DeviceOutputHead {
    let config: ModelConfig
    let weights: DeviceWeights
    let gradients: [DeviceTensor]
    let ops: DeviceOps

    /// What the backward needs.
    struct Saved {
        let input: DeviceTensor           // x, fp32 [T, E]
        let inverseRMS: DeviceTensor      // fp32 [T]
        let normed: DeviceTensor          // x̂, bf16 [T, E]
        let chunks: [(rows: Range<Int>, result: TrainingKernels.CrossEntropyResult)]
    }

    var chunkRows: Int { max(64, (1 << 24) / config.vocab) }

    func forward(_ x: DeviceTensor, labels: [Int32], normalizer: Int) throws -> (loss: Double, correct: Int, saved: Saved) {
        let (normed, inverseRMS) = try ops.kernels.rmsNormForward(x, weight: weights.master[config.finalNormSlot],
                                                                  epsilon: config.normEps)
        var (loss, correct) = (0.0, 0)
        var chunks: [(rows: Range<Int>, result: TrainingKernels.CrossEntropyResult)] = []
        for start in stride(from: 0, to: labels.count, by: chunkRows) {
            let rows = start..<min(start + chunkRows, labels.count)
            let logits = try ops.linear(try rowsOf(normed, rows), try weights.bf16(config.outputSlot))
            let result = try ops.kernels.crossEntropyForward(logits: logits, labels: Array(labels[rows]),
                                                             normalizer: normalizer)
            (loss, correct) = (loss + result.loss, correct + result.correct)
            chunks.append((rows, result))
        }
        return (loss, correct, Saved(input: x, inverseRMS: inverseRMS, normed: normed, chunks: chunks))
    }

    /// dx (fp32 [T, E], with its bf16 rounding for the last layer's GEMMs); writes dW_head and the final norm's dw.
    func backward(_ saved: Saved, normalizer: Int) throws -> ResidualGradient {
        let weight = try weights.bf16(config.outputSlot)
        var normedGrad = try ops.blocks.filled(saved.normed.shape, with: 0, like: nil)
        for (rows, result) in saved.chunks {
            let normed = try rowsOf(saved.normed, rows)
            let logits = try ops.linear(normed, weight)
            let logitsGrad = try ops.kernels.crossEntropyBackward(logits: logits, result, normalizer: normalizer)
            try ops.blocks.write(try ops.inputGradient(logitsGrad, weight), into: &normedGrad,
                                 at: [rows, 0..<config.dim])
            try ops.weightGradient(logitsGrad, normed, into: gradients[config.outputSlot],
                                   accumulating: rows.lowerBound > 0)
        }
        let inputGrad = try ops.blocks.filled(saved.input.shape, with: 0, like: nil)
        let inputGradBF16 = try DeviceTensor.unfilled(ops.blocks.device, shape: saved.input.shape, precision: .bfloat16)
        try ops.kernels.rmsNormBackward(saved.input, inverseRMS: saved.inverseRMS,
                                        weight: weights.master[config.finalNormSlot], outputGrad: normedGrad,
                                        inputGrad: inputGrad, inputGradBF16: inputGradBF16,
                                        weightGrad: gradients[config.finalNormSlot], accumulatingWeightGrad: false)
        return ResidualGradient(value: inputGrad, bf16: inputGradBF16)
    }

    /// Rows `rows` of a `[T, E]` tensor (a copy; the whole tensor when they are all of it).
    private func rowsOf(_ x: DeviceTensor, _ rows: Range<Int>) throws -> DeviceTensor {
        rows.count == x.shape[0] ? x : try ops.blocks.slice(x, [rows, 0..<x.shape[1]])
    }
}
