import DistFlashAttn

/// Checks a full attention result (and optionally its gradients) against the float64 reference under the
/// tolerance rule, tensor by tensor: O, LSE, then dQ, dK, dV.
public enum ReferenceCheck {
    /// The precision of the "naive in the same precision" baseline.
    public enum Precision: Sendable {
        /// Everything float32 (the CPU kernels).
        case fp32
        /// float32, with P rounded to bf16 before P·V, and P, dS rounded before the backward's products
        /// (tensor-core kernels on bf16 inputs).
        case bf16Probabilities
        /// The same with fp16 (tensor-core kernels on fp16 inputs).
        case fp16Probabilities

        /// The baseline of a kernel whose matrix products take `dtype` operands (on tensor cores when
        /// `tensorCores`).
        public static func of(_ dtype: AttentionProblem.DType, tensorCores: Bool) -> Precision {
            guard tensorCores else { return .fp32 }
            switch dtype {
            case .fp32: return .fp32
            case .bf16: return .bf16Probabilities
            case .fp16: return .fp16Probabilities
            }
        }
    }

    public static func run(_ problem: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                           result: AttentionPartial, outputGrad: Tensor? = nil,
                           gradients: AttentionGradients? = nil, precision: Precision = .fp32) -> [ToleranceCheck] {
        let ref = NaiveAttention.forward(problem, query: query, key: key, value: value, as: Double.self)
        let rounding: ((Float) -> Float)? = switch precision {
        case .fp32: nil
        case .bf16Probabilities: { BFloat16.round($0) }
        case .fp16Probabilities: { Float(Float16($0)) }
        }
        let naive = NaiveAttention.forward(problem, query: query, key: key, value: value, as: Float.self,
                                           roundProbabilities: rounding)
        var checks = [
            ToleranceCheck("O", ours: result.output.scalars, baseline: naive.output, reference: ref.output),
            ToleranceCheck("LSE", ours: result.logSumExp.scalars, baseline: naive.logSumExp, reference: ref.logSumExp),
        ]
        if let outputGrad, let gradients {
            let refGrad = NaiveAttention.backward(problem, query: query, key: key, value: value,
                                                  outputGrad: outputGrad, as: Double.self)
            let naiveGrad = NaiveAttention.backward(problem, query: query, key: key, value: value,
                                                    outputGrad: outputGrad, as: Float.self,
                                                    roundProbabilities: rounding)
            checks += [
                ToleranceCheck("dQ", ours: gradients.query.scalars, baseline: naiveGrad.query, reference: refGrad.query),
                ToleranceCheck("dK", ours: gradients.key.scalars, baseline: naiveGrad.key, reference: refGrad.key),
                ToleranceCheck("dV", ours: gradients.value.scalars, baseline: naiveGrad.value, reference: refGrad.value),
            ]
        }
        return checks
    }
}
