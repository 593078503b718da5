import Foundation

/// The model's layers written plainly, one scalar at a time, on flat row-major arrays: the independent reference
/// the library's layers are tested against. Shares no code with them (RoPE angles, softmax, the causal mask by
/// positions are all computed here from their definitions).
enum ReferenceMath<R: ReferenceScalar> {
    /// y[t, o] = Σ_i x[t, i]·W[o, i]   x [T, in], W [out, in]
    static func linear(_ x: [R], _ w: [R], inputs: Int, outputs: Int) -> [R] {
        let rows = x.count / inputs
        var y: [R] = []
        y.reserveCapacity(rows * outputs)
        for t in 0..<rows {
            for o in 0..<outputs {
                y.append(R.dot(x[t * inputs..<(t + 1) * inputs], w[o * inputs..<(o + 1) * inputs]))
            }
        }
        return y
    }

    /// y[t, e] = w[e]·x[t, e] / √(mean_e x[t, e]² + ε)
    static func rmsNorm(_ x: [R], _ w: [R], epsilon: Double) -> [R] {
        let dim = w.count
        var y: [R] = []
        for t in 0..<x.count / dim {
            let row = x[t * dim..<(t + 1) * dim]
            let rms = (R.dot(row, row) / R(Double(dim)) + R(epsilon)).squareRoot()
            for e in 0..<dim { y.append(w[e] * row[t * dim + e] / rms) }
        }
        return y
    }

    /// rotate_half RoPE of x [B, n, heads, D] at the tokens' global positions.
    static func rope(_ x: [R], positions: [Int], heads: Int, headDim: Int, theta: Double) -> [R] {
        let n = positions.count, half = headDim / 2
        var y = x
        for start in stride(from: 0, to: x.count, by: headDim) {
            let position = positions[(start / (heads * headDim)) % n]
            for i in 0..<half {
                let angle = Double(position) / Foundation.pow(theta, Double(2 * i) / Double(headDim))
                let (c, s) = (R(Foundation.cos(angle)), R(Foundation.sin(angle)))
                y[start + i] = x[start + i] * c - x[start + i + half] * s
                y[start + i + half] = x[start + i + half] * c + x[start + i] * s
            }
        }
        return y
    }

    /// silu(g)·u elementwise.
    static func swiglu(gate: [R], up: [R]) -> [R] {
        zip(gate, up).map { g, u in g / (R(1) + (R(0) - g).exp()) * u }
    }

    /// Σ_{t : label ≥ 0} (log Σ_v e^z[t, v] − z[t, label]) / N   z [T, V]
    static func crossEntropy(_ logits: [R], labels: [Int32], vocab: Int, normalizer: Int) -> R {
        var loss = R(0)
        for (t, label) in labels.enumerated() where label >= 0 {
            let row = logits[t * vocab..<(t + 1) * vocab]
            let top = R(row.map(\.doubleValue).max()!)
            let sum = row.reduce(R(0)) { $0 + ($1 - top).exp() }
            loss = loss + (top + sum.log() - row[t * vocab + Int(label)])
        }
        return loss / R(Double(normalizer))
    }

    /// Causal attention with materialised scores: query at position p sees the keys at positions ≤ p.
    /// q [B, n, H, D], k and v [B, n, H_kv, D] → O [B, n, H, D]; scale 1/√D.
    static func attention(query: [R], key: [R], value: [R], positions: [Int], heads: Int, kvHeads: Int,
                          headDim: Int) -> [R] {
        let n = positions.count, batch = query.count / (n * heads * headDim)
        let scale = R(1 / Double(headDim).squareRoot())
        var output = [R](repeating: R(0), count: query.count)
        for b in 0..<batch {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                for i in 0..<n {
                    let q = ((b * n + i) * heads + h) * headDim
                    let visible = (0..<n).filter { positions[$0] <= positions[i] }
                    let scores = visible.map { j -> R in
                        let k = ((b * n + j) * kvHeads + g) * headDim
                        return R.dot(query[q..<q + headDim], key[k..<k + headDim]) * scale
                    }
                    let top = R(scores.map(\.doubleValue).max()!)
                    let weights = scores.map { ($0 - top).exp() }
                    let sum = weights.reduce(R(0), +)
                    for d in 0..<headDim {
                        var acc = R(0)
                        for (w, j) in zip(weights, visible) { acc = acc + w * value[((b * n + j) * kvHeads + g) * headDim + d] }
                        output[q + d] = acc / sum
                    }
                }
            }
        }
        return output
    }
}
