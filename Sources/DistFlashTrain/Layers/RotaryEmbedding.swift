import DistFlashAttn

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Rotary position embedding in the Hugging Face `rotate_half` convention: dimension i < D/2 of a head pairs with
/// i + D/2, and the pair is rotated by the angle p·θ^(−2i/D) of the token's *global* position p:
/// ```
/// y_i       = x_i · cos − x_{i+D/2} · sin
/// y_{i+D/2} = x_{i+D/2} · cos + x_i · sin        i.e. y = x·cos + rotate_half(x)·sin
/// ```
/// The positions are passed in, one per token of the shard, because a shard's tokens need not be contiguous
/// (zigzag and striped layouts). Backward rotates by the opposite angle (a rotation's transpose is its inverse).
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    /// Global position of each of the shard's n tokens.
    public let positions: [Int]
    /// cos and sin of each (token, frequency) angle `[n, D/2]`, computed in float64 and rounded once (a GPU
    /// uploads the same tables).
    public let cosines: [Float]
    public let sines: [Float]

    public init(positions: [Int], headDim: Int, theta: Double) throws {
        guard headDim >= 2, headDim % 2 == 0 else {
            throw DistFlashError(.invalidProblem, "rotary head-dim D = \(headDim): must be even and ≥ 2")
        }
        if let bad = positions.firstIndex(where: { $0 < 0 }) {
            throw DistFlashError(.invalidProblem, "position \(positions[bad]) at index \(bad): positions must be ≥ 0")
        }
        self.headDim = headDim
        self.positions = positions
        let half = headDim / 2
        let frequencies = (0..<half).map { 1 / pow(theta, Double(2 * $0) / Double(headDim)) }
        var cosines = [Float](repeating: 0, count: positions.count * half), sines = cosines
        for (t, p) in positions.enumerated() {
            for i in 0..<half {
                let angle = Double(p) * frequencies[i]
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
        (self.cosines, self.sines) = (cosines, sines)
    }

    /// Rotates x `[B, n, heads, D]` in place.
    public func apply(to x: inout Tensor) throws { try rotate(&x, direction: 1) }

    /// The backward: dx = Rᵀ·dy, in place on dy `[B, n, heads, D]`.
    public func applyBackward(to grad: inout Tensor) throws { try rotate(&grad, direction: -1) }

    private func rotate(_ x: inout Tensor, direction: Float) throws {
        let n = positions.count
        guard x.shape.count == 4, x.shape[1] == n, x.shape[3] == headDim else {
            throw DistFlashError(.shapeMismatch, "rotary input has shape \(x.shape), expected [B, n = \(n), heads, "
                + "D = \(headDim)]")
        }
        let (batch, heads, half) = (x.shape[0], x.shape[2], headDim / 2)
        cosines.withUnsafeBufferPointer { cosines in
            sines.withUnsafeBufferPointer { sines in
                x.scalars.withUnsafeMutableBufferPointer { x in
                    for b in 0..<batch {
                        for t in 0..<n {
                            let (c, s) = (cosines.baseAddress! + t * half, sines.baseAddress! + t * half)
                            for h in 0..<heads {
                                let head = x.baseAddress! + ((b * n + t) * heads + h) * headDim
                                for i in 0..<half {
                                    let (lo, hi, sine) = (head[i], head[i + half], direction * s[i])
                                    head[i] = lo * c[i] - hi * sine
                                    head[i + half] = hi * c[i] + lo * sine
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
