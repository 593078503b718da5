import DistFlashAttn
import Foundation

/// Adam with decoupled weight decay (Loshchilov & Hutter), over the flat parameter indices of its state's shard.
/// For each index i of the shard, at update t (1-based), with gradient g and learning rate η:
/// ```
///  m ← β1·m + (1 − β1)·g
///  v ← β2·v + (1 − β2)·g²
///  θ ← θ − η·( (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε) + λ·θ )
/// ```
/// λ is the weight decay for tensors of rank ≥ 2 (linear weights, embeddings) and 0 for 1-D tensors (norm weights),
/// whose scale decay would only fight.
///
/// ZeRO-1: a rank's optimizer holds moments only for its contiguous shard (`Parameters.shardRanges`) and updates
/// only those indices; gathering every rank's slice (`flatScalars` / `setFlatScalars`) gives, bit for bit, what one
/// optimizer over all indices gives, because each index is updated by the same arithmetic whoever owns it.
public struct AdamW: Sendable {
    public struct Hyperparameters: Sendable, Equatable {
        public var beta1: Float
        public var beta2: Float
        public var epsilon: Float
        public var weightDecay: Float

        public init(beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8, weightDecay: Float = 0.1) {
            (self.beta1, self.beta2, self.epsilon, self.weightDecay) = (beta1, beta2, epsilon, weightDecay)
        }

        /// λ for a tensor of `rank` axes: matrices (linear weights, embeddings) decay, 1-D norm weights do not.
        public func weightDecay(forTensorOfRank rank: Int) -> Float { rank >= 2 ? weightDecay : 0 }

        /// Throws `invalidProblem` naming the value unless β1, β2 ∈ [0, 1), ε > 0 and λ ≥ 0 (all finite).
        public func validate() throws {
            func fail(_ what: String, _ value: Float, _ rule: String) -> DistFlashError {
                DistFlashError(.invalidProblem, "AdamW: \(what) = \(value): \(rule)")
            }
            guard beta1 >= 0, beta1 < 1 else { throw fail("β1", beta1, "must be in [0, 1)") }
            guard beta2 >= 0, beta2 < 1 else { throw fail("β2", beta2, "must be in [0, 1)") }
            guard epsilon > 0, epsilon.isFinite else { throw fail("ε", epsilon, "must be finite and > 0") }
            guard weightDecay >= 0, weightDecay.isFinite else {
                throw fail("weight decay", weightDecay, "must be finite and ≥ 0")
            }
        }
    }

    public let hyperparameters: Hyperparameters
    /// Moments and step, to save in a checkpoint (gather ZeRO-1 shards first with `AdamWState.gathered`).
    public private(set) var state: AdamWState

    /// An optimizer resuming from `state` (fresh: `AdamWState(shard: 0..<parameters.scalarCount)`, or a ZeRO-1
    /// rank's range). Throws `invalidProblem` for bad hyperparameters.
    public init(state: AdamWState, hyperparameters: Hyperparameters = Hyperparameters()) throws {
        try hyperparameters.validate()
        (self.state, self.hyperparameters) = (state, hyperparameters)
    }

    /// A fresh optimizer over the flat indices `shard` of `parameters` (all of them by default).
    public init(parameters: Parameters, shard: Range<Int>? = nil,
                hyperparameters: Hyperparameters = Hyperparameters()) throws {
        let all = 0..<parameters.scalarCount
        let shard = shard ?? all
        guard shard.lowerBound >= 0, shard.upperBound <= all.upperBound else {
            throw DistFlashError(.shapeMismatch,
                                 "AdamW: shard \(shard) must lie within the flat parameter range \(all)")
        }
        try self.init(state: AdamWState(shard: shard), hyperparameters: hyperparameters)
    }

    /// One update of the shard's indices of `parameters` with `gradients` (same names and shapes) at learning rate
    /// `learningRate`; indices outside the shard are left alone. Throws `shapeMismatch` naming the tensor when the
    /// gradients or the shard do not fit the parameters.
    public mutating func update(_ parameters: inout Parameters, gradients: Parameters, learningRate: Float) throws {
        guard gradients.names == parameters.names else {
            throw DistFlashError(.shapeMismatch, "AdamW: gradients name \(gradients.count) tensors, parameters "
                + "\(parameters.count); they must list the same names in the same order")
        }
        for (name, (p, g)) in zip(parameters.names, zip(parameters.tensors, gradients.tensors))
        where p.shape != g.shape {
            throw DistFlashError(.shapeMismatch,
                                 "AdamW: gradient of \(name) has shape \(g.shape), the parameter \(p.shape)")
        }
        guard state.shard.lowerBound >= 0, state.shard.upperBound <= parameters.scalarCount else {
            throw DistFlashError(.shapeMismatch, "AdamW: shard \(state.shard) must lie within the flat parameter "
                + "range 0..<\(parameters.scalarCount)")
        }

        state.step += 1
        let h = hyperparameters
        let correction1 = Float(1 - pow(Double(h.beta1), Double(state.step)))
        let correction2 = Float(1 - pow(Double(h.beta2), Double(state.step)))
        for (t, elements, offset) in parameters.flatSegments(in: state.shard) {
            let decay = h.weightDecay(forTensorOfRank: parameters.tensors[t].shape.count)
            let g = gradients.tensors[t].scalars
            parameters.tensors[t].scalars.withUnsafeMutableBufferPointer { theta in
                state.m.withUnsafeMutableBufferPointer { m in
                    state.v.withUnsafeMutableBufferPointer { v in
                        for (e, i) in zip(elements, offset...) {
                            m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[e]
                            v[i] = h.beta2 * v[i] + (1 - h.beta2) * (g[e] * g[e])
                            let mHat = m[i] / correction1, vHat = v[i] / correction2
                            theta[e] -= learningRate * (mHat / (vHat.squareRoot() + h.epsilon) + decay * theta[e])
                        }
                    }
                }
            }
        }
    }
}
