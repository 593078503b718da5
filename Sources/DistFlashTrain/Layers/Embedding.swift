import DistFlashAttn

/// Token embedding: a row lookup and, backward, a scatter-add.
/// ```
/// y[t] = W[token_t]            dW[v] += Σ_{t : token_t = v} dy[t]
/// ```
public enum Embedding {
    /// tokens `[B, n]` (values in 0 ..< V), table W `[V, E]` → y `[B, n, E]`.
    public static func forward(tokens: [Int32], batch: Int, table: Tensor) throws -> Tensor {
        let (vocab, dim) = (table.shape[0], table.shape[1])
        guard batch >= 1, tokens.count % batch == 0 else {
            throw DistFlashError(.shapeMismatch, "embedding: \(tokens.count) tokens do not form B = \(batch) rows")
        }
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= vocab }) {
            throw DistFlashError(.invalidProblem, "token \(tokens[bad]) at index \(bad) is outside the vocabulary "
                + "0..<\(vocab): check the tokenizer or the model's vocab V")
        }
        var output = Tensor(shape: [batch, tokens.count / batch, dim])
        output.scalars.withUnsafeMutableBufferPointer { y in
            table.scalars.withUnsafeBufferPointer { w in
                for (t, token) in tokens.enumerated() {
                    (y.baseAddress! + t * dim).update(from: w.baseAddress! + Int(token) * dim, count: dim)
                }
            }
        }
        return output
    }

    /// dW `[V, E]` += the rows of dy `[B, n, E]` at their tokens `[B, n]` (tokens already checked by `forward`).
    public static func backward(tokens: [Int32], outputGrad: Tensor, tableGrad: inout Tensor) {
        let dim = tableGrad.shape[1]
        precondition(outputGrad.count == tokens.count * dim, "embedding backward: dy \(outputGrad.shape) for \(tokens.count) tokens")
        tableGrad.scalars.withUnsafeMutableBufferPointer { dw in
            outputGrad.scalars.withUnsafeBufferPointer { dy in
                for (t, token) in tokens.enumerated() {
                    let row = dw.baseAddress! + Int(token) * dim, src = dy.baseAddress! + t * dim
                    for e in 0..<dim { row[e] += src[e] }
                }
            }
        }
    }
}
