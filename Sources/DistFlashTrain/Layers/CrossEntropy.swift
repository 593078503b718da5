import DistFlashAttn

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Next-token cross-entropy over logits z `[T, V]` with labels `[T]`; label −1 marks a token without loss.
/// The sum is divided by N, a token count the caller gives — the number of labelled tokens over *all* ranks — so
/// the losses of the ranks' shards add up to the global mean:
/// ```
/// LSE_t = log Σ_v e^(z_tv)        loss = Σ_{t : label_t ≥ 0} (LSE_t − z_t,label_t) / N
/// dz_tv = (e^(z_tv − LSE_t) − [v = label_t]) / N   for labelled t,   0 otherwise
/// ```
public enum CrossEntropy {
    /// The loss (summed in float64) and LSE `[T]` of every row.
    public static func forward(logits: Tensor, labels: [Int32], normalizer: Int) throws
        -> (loss: Double, logSumExp: [Float]) {
        let vocab = try check(logits, labels, normalizer)
        var logSumExp = [Float](repeating: 0, count: labels.count)
        var loss = 0.0
        logits.scalars.withUnsafeBufferPointer { z in
            for t in labels.indices {
                let row = z.baseAddress! + t * vocab
                var top = -Float.infinity
                for v in 0..<vocab { top = max(top, row[v]) }
                var sum: Float = 0
                for v in 0..<vocab { sum += expf(row[v] - top) }
                logSumExp[t] = top + logf(sum)
                if labels[t] >= 0 { loss += Double(logSumExp[t] - row[Int(labels[t])]) }
            }
        }
        return (loss / Double(normalizer), logSumExp)
    }

    /// The number of labelled rows whose largest logit (the first, on ties) is at their label: the model's
    /// greedy prediction is right there.
    public static func correctPredictions(logits: Tensor, labels: [Int32]) throws -> Int {
        let vocab = try check(logits, labels, 1)
        var correct = 0
        logits.scalars.withUnsafeBufferPointer { z in
            for t in labels.indices where labels[t] >= 0 {
                let row = z.baseAddress! + t * vocab
                var best = 0
                for v in 1..<vocab where row[v] > row[best] { best = v }
                if best == Int(labels[t]) { correct += 1 }
            }
        }
        return correct
    }

    /// dz `[T, V]`, written over the logits (pass them as the last use to spare a copy).
    public static func backward(logits: consuming Tensor, labels: [Int32], logSumExp: [Float], normalizer: Int) throws
        -> Tensor {
        let vocab = try check(logits, labels, normalizer)
        guard logSumExp.count == labels.count else {
            throw DistFlashError(.shapeMismatch, "cross-entropy: \(logSumExp.count) LSE values for \(labels.count) rows")
        }
        let scale = 1 / Float(normalizer)
        logits.scalars.withUnsafeMutableBufferPointer { z in
            for t in labels.indices {
                let row = z.baseAddress! + t * vocab
                guard labels[t] >= 0 else {
                    row.update(repeating: 0, count: vocab)
                    continue
                }
                for v in 0..<vocab { row[v] = expf(row[v] - logSumExp[t]) * scale }
                row[Int(labels[t])] -= scale
            }
        }
        return logits
    }

    /// V, after checking the shapes, the label range and N.
    private static func check(_ logits: Tensor, _ labels: [Int32], _ normalizer: Int) throws -> Int {
        guard logits.shape.count == 2, logits.shape[0] == labels.count else {
            throw DistFlashError(.shapeMismatch, "cross-entropy: logits \(logits.shape) must be [T = \(labels.count), V]")
        }
        let vocab = logits.shape[1]
        if let bad = labels.firstIndex(where: { $0 < -1 || Int($0) >= vocab }) {
            throw DistFlashError(.invalidProblem, "label \(labels[bad]) at row \(bad) is outside 0..<\(vocab) "
                + "(and is not −1, the no-loss label)")
        }
        guard normalizer >= 1 else {
            throw DistFlashError(.invalidProblem, "loss normalizer N = \(normalizer): must be ≥ 1 (the number of "
                + "labelled tokens over all ranks)")
        }
        return vocab
    }
}
