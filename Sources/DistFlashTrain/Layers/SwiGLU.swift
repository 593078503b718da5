import DistFlashAttn

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The gated activation of the LLaMA MLP, elementwise on gate g and up u `[…, F]`:
/// ```
/// a = silu(g) · u,   silu(g) = g · σ(g),   σ(g) = 1 / (1 + e^(−g))
/// dg = da · u · σ(g) · (1 + g · (1 − σ(g)))        du = da · silu(g)
/// ```
public enum SwiGLU {
    public static func forward(gate: Tensor, up: Tensor) throws -> Tensor {
        try up.requireShape(gate.shape, "SwiGLU up")
        var output = Tensor(shape: gate.shape)
        for i in output.scalars.indices {
            let g = gate.scalars[i]
            output.scalars[i] = g / (1 + expf(-g)) * up.scalars[i]
        }
        return output
    }

    /// (dg, du) from da and the forward's g and u.
    public static func backward(gate: Tensor, up: Tensor, outputGrad: Tensor) throws -> (gate: Tensor, up: Tensor) {
        try up.requireShape(gate.shape, "SwiGLU up")
        try outputGrad.requireShape(gate.shape, "SwiGLU da")
        var (gateGrad, upGrad) = (Tensor(shape: gate.shape), Tensor(shape: gate.shape))
        for i in gateGrad.scalars.indices {
            let (g, da) = (gate.scalars[i], outputGrad.scalars[i])
            let sigmoid = 1 / (1 + expf(-g))
            gateGrad.scalars[i] = da * up.scalars[i] * sigmoid * (1 + g * (1 - sigmoid))
            upGrad.scalars[i] = da * g * sigmoid
        }
        return (gateGrad, upGrad)
    }
}
