/// A (possibly partial) attention result for a set of query rows: the output normalised over the keys seen so
/// far and the log-sum-exp of their scores. Partials over disjoint key sets merge exactly:
/// ```
/// lse = log(exp(lse₁) + exp(lse₂))
/// O   = exp(lse₁ − lse)·O₁ + exp(lse₂ − lse)·O₂
/// ```
/// The empty partial (O = 0, LSE = −∞) is the identity of that merge, and a row that sees no key stays empty.
public struct AttentionPartial: Sendable, Equatable {
    /// `[B, S, H, D]`
    public var output: Tensor
    /// `[B, H, S]`, natural log.
    public var logSumExp: Tensor

    public init(output: Tensor, logSumExp: Tensor) {
        self.output = output
        self.logSumExp = logSumExp
    }

    /// The merge identity for B×S query rows of H heads of dimension D.
    public static func empty(batch: Int, sequence: Int, heads: Int, headDim: Int) -> AttentionPartial {
        AttentionPartial(output: Tensor(shape: [batch, sequence, heads, headDim]),
                         logSumExp: Tensor(shape: [batch, heads, sequence], repeating: -.infinity))
    }
}

/// Gradients of attention with respect to its inputs, accumulated in float32.
public struct AttentionGradients: Sendable, Equatable {
    /// `[B, S_q, H, D]`
    public var query: Tensor
    /// `[B, S_k, H_kv, D]`
    public var key: Tensor
    /// `[B, S_k, H_kv, D]`
    public var value: Tensor

    public init(query: Tensor, key: Tensor, value: Tensor) {
        self.query = query
        self.key = key
        self.value = value
    }

    public static func zeros(queryShape: [Int], keyValueShape: [Int]) -> AttentionGradients {
        AttentionGradients(query: Tensor(shape: queryShape), key: Tensor(shape: keyValueShape),
                           value: Tensor(shape: keyValueShape))
    }
}
