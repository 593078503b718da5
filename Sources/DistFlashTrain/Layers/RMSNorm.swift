import DistFlashAttn

/// Root-mean-square normalisation of each token row x `[…, E]` with a learned gain w `[E]`:
/// ```
/// r = 1 / √(Σ_e x_e² / E + ε)        y_e = w_e · x_e · r
/// ```
/// Backward, with g = w ∘ dy:
/// ```
/// dx_e = r · (g_e − x_e · r² · (Σ_j g_j x_j) / E)        dw_e = Σ_rows dy_e · x_e · r
/// ```
public enum RMSNorm {
    /// y (same shape as x) and r, one value per row (shape x.shape without the last axis).
    public static func forward(_ x: Tensor, weight: Tensor, epsilon: Float) throws
        -> (output: Tensor, inverseRMS: Tensor) {
        let dim = weight.count
        try requireRows(x, dim)
        var output = Tensor(shape: x.shape)
        var inverseRMS = Tensor(shape: Array(x.shape.dropLast()))
        x.scalars.withUnsafeBufferPointer { x in
            weight.scalars.withUnsafeBufferPointer { w in
                output.scalars.withUnsafeMutableBufferPointer { y in
                    inverseRMS.scalars.withUnsafeMutableBufferPointer { r in
                        for t in r.indices {
                            let row = x.baseAddress! + t * dim, out = y.baseAddress! + t * dim
                            var squares: Float = 0
                            for e in 0..<dim { squares += row[e] * row[e] }
                            let rt = 1 / (squares / Float(dim) + epsilon).squareRoot()
                            r[t] = rt
                            for e in 0..<dim { out[e] = w[e] * (row[e] * rt) }
                        }
                    }
                }
            }
        }
        return (output, inverseRMS)
    }

    /// Adds this norm's dx into `inputGrad` (shape of x: the residual stream's gradient is already there) and dw
    /// into `weightGrad` `[E]`, given dy and the forward's x and r.
    public static func backward(_ x: Tensor, inverseRMS: Tensor, weight: Tensor, outputGrad: Tensor,
                                inputGrad: inout Tensor, weightGrad: inout Tensor) throws {
        let dim = weight.count
        try requireRows(x, dim)
        try outputGrad.requireShape(x.shape, "RMSNorm dy")
        try inputGrad.requireShape(x.shape, "RMSNorm dx")
        try weightGrad.requireShape(weight.shape, "RMSNorm dw")
        try inverseRMS.requireShape(Array(x.shape.dropLast()), "RMSNorm r")
        x.scalars.withUnsafeBufferPointer { x in
            weight.scalars.withUnsafeBufferPointer { w in
                outputGrad.scalars.withUnsafeBufferPointer { dy in
                    inverseRMS.scalars.withUnsafeBufferPointer { r in
                        inputGrad.scalars.withUnsafeMutableBufferPointer { dx in
                            weightGrad.scalars.withUnsafeMutableBufferPointer { dw in
                                for t in r.indices {
                                    let (row, grad, out) = (x.baseAddress! + t * dim, dy.baseAddress! + t * dim,
                                                            dx.baseAddress! + t * dim)
                                    let rt = r[t]
                                    var dot: Float = 0
                                    for e in 0..<dim {
                                        dot += w[e] * grad[e] * row[e]
                                        dw[e] += grad[e] * row[e] * rt
                                    }
                                    let c = rt * rt * dot / Float(dim)
                                    for e in 0..<dim { out[e] += rt * (w[e] * grad[e] - row[e] * c) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    private static func requireRows(_ x: Tensor, _ dim: Int) throws {
        guard x.shape.last == dim else {
            throw DistFlashError(.shapeMismatch, "RMSNorm input has shape \(x.shape), its last axis must be E = \(dim)")
        }
    }
}
