import DistFlashAttn

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The scalar types the naive reference runs in: float64 (the reference) and float32 (the "naive in the same
/// precision" baseline of the tolerance rule).
public protocol NaiveScalar: BinaryFloatingPoint, Sendable {
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
}

extension Double: NaiveScalar {
    public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    public static func log(_ x: Double) -> Double { Glibc.log(x) }
}

extension Float: NaiveScalar {
    public static func exp(_ x: Float) -> Float { expf(x) }
    public static func log(_ x: Float) -> Float { logf(x) }
}

/// Textbook attention with the score matrix materialised row by row — for test sizes only. Shares no code with
/// the tiled kernels: masks are evaluated per pair with `AttentionMask.allows(query:key:)`, δ comes from P∘dP
/// rather than dO∘O.
public enum NaiveAttention {
    /// O `[B, S, H, D]` and LSE `[B, H, S]` (−∞ and O = 0 for rows that see no key).
    /// `roundProbabilities` rounds each unnormalised probability before it weights V, as a kernel that feeds P to
    /// bf16 tensor cores does (the sum l uses the unrounded values, as such kernels do).
    public static func forward<T: NaiveScalar>(_ p: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                                               as: T.Type = T.self, roundProbabilities: ((T) -> T)? = nil)
        -> (output: [T], logSumExp: [T]) {
        let (B, S, H, Hkv, D) = (p.batch, p.sequence, p.heads, p.kvHeads, p.headDim)
        let visible = visibility(p)
        var output = [T](repeating: 0, count: B * S * H * D)
        var lse = [T](repeating: -.infinity, count: B * H * S)
        var scores = [T](repeating: 0, count: S)
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / Hkv)
                for i in 0..<S {
                    let q = (b * S + i) * H * D + h * D
                    var top = -T.infinity
                    for j in 0..<S where visible(i, j) {
                        let k = (b * S + j) * Hkv * D + g * D
                        var dot: T = 0
                        for d in 0..<D { dot += T(query.scalars[q + d]) * T(key.scalars[k + d]) }
                        scores[j] = T(p.scale) * dot
                        top = max(top, scores[j])
                    }
                    if top == -.infinity { continue }
                    var sum: T = 0
                    for j in 0..<S where visible(i, j) {
                        let weight = T.exp(scores[j] - top)
                        sum += weight
                        let used = roundProbabilities?(weight) ?? weight
                        let v = (b * S + j) * Hkv * D + g * D
                        for d in 0..<D { output[q + d] += used * T(value.scalars[v + d]) }
                    }
                    for d in 0..<D { output[q + d] /= sum }
                    lse[(b * H + h) * S + i] = top + T.log(sum)
                }
            }
        }
        return (output, lse)
    }

    /// dQ `[B, S, H, D]`, dK and dV `[B, S, H_kv, D]`. With `roundProbabilities`, δ comes from the output of the
    /// rounded forward (δ = rowsum(dO ∘ O), as a flash backward computes it from the stored O), and P (in dV) and
    /// dS (in dQ, dK) are rounded as a tensor-core backward rounds them.
    public static func backward<T: NaiveScalar>(_ p: AttentionProblem, query: Tensor, key: Tensor, value: Tensor,
                                                outputGrad: Tensor, as: T.Type = T.self,
                                                roundProbabilities: ((T) -> T)? = nil)
        -> (query: [T], key: [T], value: [T]) {
        let (B, S, H, Hkv, D) = (p.batch, p.sequence, p.heads, p.kvHeads, p.headDim)
        let visible = visibility(p)
        let forwardResult = forward(p, query: query, key: key, value: value, as: T.self,
                                    roundProbabilities: roundProbabilities)
        let lse = forwardResult.logSumExp
        var dq = [T](repeating: 0, count: B * S * H * D)
        var dk = [T](repeating: 0, count: B * S * Hkv * D)
        var dv = [T](repeating: 0, count: B * S * Hkv * D)
        var probs = [T](repeating: 0, count: S), dprobs = [T](repeating: 0, count: S)
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / Hkv)
                for i in 0..<S {
                    let L = lse[(b * H + h) * S + i]
                    if L == -.infinity { continue }
                    let q = (b * S + i) * H * D + h * D
                    var delta: T = 0
                    for j in 0..<S where visible(i, j) {
                        let k = (b * S + j) * Hkv * D + g * D
                        var dot: T = 0, dotGrad: T = 0
                        for d in 0..<D {
                            dot += T(query.scalars[q + d]) * T(key.scalars[k + d])
                            dotGrad += T(outputGrad.scalars[q + d]) * T(value.scalars[k + d])
                        }
                        probs[j] = T.exp(T(p.scale) * dot - L)
                        dprobs[j] = dotGrad
                        delta += probs[j] * dotGrad
                    }
                    if roundProbabilities != nil {
                        delta = 0
                        for d in 0..<D { delta += T(outputGrad.scalars[q + d]) * forwardResult.output[q + d] }
                    }
                    for j in 0..<S where visible(i, j) {
                        let k = (b * S + j) * Hkv * D + g * D
                        // A tensor-core kernel feeds P and dS to the mma in the rounded precision.
                        let ds = roundProbabilities?(probs[j] * (dprobs[j] - delta) * T(p.scale))
                            ?? probs[j] * (dprobs[j] - delta) * T(p.scale)
                        let used = roundProbabilities?(probs[j]) ?? probs[j]
                        for d in 0..<D {
                            dq[q + d] += ds * T(key.scalars[k + d])
                            dk[k + d] += ds * T(query.scalars[q + d])
                            dv[k + d] += used * T(outputGrad.scalars[q + d])
                        }
                    }
                }
            }
        }
        return (dq, dk, dv)
    }

    /// visible(i, j) for positions 0..<S, with document indices precomputed.
    private static func visibility(_ p: AttentionProblem) -> (Int, Int) -> Bool {
        let documents = p.mask.documentIndices(of: Array(0..<p.sequence))
        let mask = p.mask
        return { i, j in mask.allows(query: i, key: j, queryDocument: documents[i], keyDocument: documents[j]) }
    }
}
