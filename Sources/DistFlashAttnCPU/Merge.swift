import DistFlashAttn

#if canImport(Glibc)
import Glibc
#endif

extension CPUBackend {
    /// Folds `other` into `partial`; both cover the same query rows for disjoint key sets. Exact in float32:
    /// ```
    /// lse = max + log(exp(lse₁ − max) + exp(lse₂ − max))
    /// O   = exp(lse₁ − lse)·O₁ + exp(lse₂ − lse)·O₂
    /// ```
    /// - partial, other: O `[B, S, H, D]`, LSE `[B, H, S]`.
    public func merge(_ partial: inout AttentionPartial, with other: AttentionPartial) throws {
        try other.output.requireShape(partial.output.shape, "merged O")
        try other.logSumExp.requireShape(partial.logSumExp.shape, "merged LSE")
        let shape = partial.output.shape
        let (batch, sequence, heads, dim) = (shape[0], shape[1], shape[2], shape[3])
        other.output.scalars.withUnsafeBufferPointer { o2 in
            other.logSumExp.scalars.withUnsafeBufferPointer { lse2 in
                partial.output.scalars.withUnsafeMutableBufferPointer { o1 in
                    partial.logSumExp.scalars.withUnsafeMutableBufferPointer { lse1 in
                        let (o1, lse1) = (SharedFloats(o1.baseAddress!), SharedFloats(lse1.baseAddress!))
                        let (o2, lse2) = (SharedFloats(o2.baseAddress!), SharedFloats(lse2.baseAddress!))
                        parallelFor(count: batch * heads, workers: workers) { task, _ in
                            let b = task / heads, h = task % heads
                            for i in 0..<sequence {
                                let l = (b * heads + h) * sequence + i
                                let (a, c) = (lse1.base[l], lse2.base[l])
                                if c == -.infinity { continue }
                                let row1 = o1.base + ((b * sequence + i) * heads + h) * dim
                                let row2 = o2.base + ((b * sequence + i) * heads + h) * dim
                                let top = max(a, c)
                                let (wa, wc) = (expf(a - top), expf(c - top))
                                let total = wa + wc
                                let (fa, fc) = (wa / total, wc / total)
                                for d in 0..<dim { row1[d] = fa * row1[d] + fc * row2[d] }
                                lse1.base[l] = top + logf(total)
                            }
                        }
                    }
                }
            }
        }
    }
}
