import DistFlashAttn
import DistFlashAttnCPU

/// The bias-free projection of LLaMA, with weights stored `[out, in]` as in PyTorch:
/// ```
/// y = x·Wᵀ        dx = dy·W        dW += dyᵀ·x
/// ```
/// x `[T, in]` and y `[T, out]` with T = B·n token rows. Any tensor holding T·in values serves as x (e.g. O
/// `[B, n, H, D]` for W_o, whose in = H·D): its rows are read `in` values at a time, with `in` taken from W.
public enum Linear {
    /// y = x·Wᵀ with W `[out, in]`; y has `shape` (default `[T, out]`).
    public static func forward(_ x: Tensor, weight: Tensor, shape: [Int]? = nil, on cpu: CPUBackend) throws -> Tensor {
        let x = try rows(x, of: weight.shape[1], "x")
        var y = Tensor(shape: shape ?? [x.shape[0], weight.shape[0]])
        try cpu.matmul(x, weight, transposeB: true, into: &y)
        return y
    }

    /// y += x·Wᵀ: a residual branch added onto the stream y (any tensor of T·out values).
    public static func forward(_ x: Tensor, weight: Tensor, addingTo y: inout Tensor, on cpu: CPUBackend) throws {
        try cpu.matmul(rows(x, of: weight.shape[1], "x"), weight, transposeB: true, beta: 1, into: &y)
    }

    /// dx = dy·W (or dx += dy·W when `accumulate`): dy holds T·out values, dx any tensor of T·in values.
    public static func inputGradient(_ outputGrad: Tensor, weight: Tensor, into inputGrad: inout Tensor,
                                     accumulate: Bool = false, on cpu: CPUBackend) throws {
        try cpu.matmul(rows(outputGrad, of: weight.shape[0], "dy"), weight, beta: accumulate ? 1 : 0, into: &inputGrad)
    }

    /// dW `[out, in]` += dyᵀ·x, dy holding T·out values and x T·in. Accumulates, so gradients of several uses of
    /// W (or of several micro-batches) add up.
    public static func accumulateWeightGradient(_ outputGrad: Tensor, input x: Tensor, into weightGrad: inout Tensor,
                                                on cpu: CPUBackend) throws {
        guard weightGrad.shape.count == 2 else {
            throw DistFlashError(.shapeMismatch, "dW has shape \(weightGrad.shape), expected [out, in]")
        }
        try cpu.matmul(rows(outputGrad, of: weightGrad.shape[0], "dy"), rows(x, of: weightGrad.shape[1], "x"),
                       transposeA: true, beta: 1, into: &weightGrad)
    }

    /// `t` viewed as `[T, width]` (no copy).
    private static func rows(_ t: Tensor, of width: Int, _ name: String) throws -> Tensor {
        guard width > 0, t.count % width == 0 else {
            throw DistFlashError(.shapeMismatch, "linear: \(name) has shape \(t.shape), which is not rows of \(width) "
                + "values as the weight requires")
        }
        return try Tensor(shape: [t.count / width, width], scalars: t.scalars)
    }
}
