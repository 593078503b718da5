import DistFlashAttn

/// Global-norm gradient clipping: all gradients seen as one vector g, scaled by c = maxNorm / (‖g‖₂ + 10⁻⁶) when
/// ‖g‖₂ > maxNorm, so the step's direction is kept and its size bounded.
public enum GradientClipping {
    /// ‖g‖₂ over every tensor, summed in Float64 in parameter order (the same on every rank that holds the same
    /// gradients, so ZeRO-1 ranks agree on the factor).
    public static func globalNorm(_ gradients: Parameters) -> Float {
        var sum = 0.0
        for tensor in gradients.tensors {
            for value in tensor.scalars { sum += Double(value) * Double(value) }
        }
        return Float(sum.squareRoot())
    }

    /// The scale that brings a gradient of global norm `norm` within `maxNorm`, or nil when it already is.
    public static func factor(norm: Float, maxNorm: Float) -> Float? {
        norm > maxNorm ? maxNorm / (norm + 1e-6) : nil
    }

    /// Scales `gradients` in place so their global norm is at most `maxNorm` and returns the norm before clipping.
    /// A non-finite norm (an overflow or NaN in the backward pass) is returned with the gradients untouched, so the
    /// caller can skip the update. Throws `invalidProblem` unless `maxNorm` is finite and > 0.
    @discardableResult
    public static func clip(_ gradients: inout Parameters, maxNorm: Float) throws -> Float {
        guard maxNorm > 0, maxNorm.isFinite else {
            throw DistFlashError(.invalidProblem, "gradient clipping: max norm = \(maxNorm): must be finite and > 0")
        }
        let norm = globalNorm(gradients)
        guard norm.isFinite, let factor = factor(norm: norm, maxNorm: maxNorm) else { return norm }
        for t in gradients.tensors.indices {
            for i in gradients.tensors[t].scalars.indices { gradients.tensors[t].scalars[i] *= factor }
        }
        return norm
    }
}
