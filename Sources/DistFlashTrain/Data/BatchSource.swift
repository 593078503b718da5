import DistFlashAttn

/// A training data stream whose batch for step `t` is a pure function of the source's seed and `t`, so a run resumed
/// from a checkpoint at step `t` sees exactly the batches it would have seen without stopping.
///
/// Row `b` of a batch depends only on (seed, step, b), not on the batch size, so data-parallel ranks can each build
/// their own rows and together hold the same batch one process would.
public protocol BatchSource: Sendable {
    /// Token ids run over `0..<vocabularySize`.
    var vocabularySize: Int { get }
    /// S, the length of every row.
    var sequenceLength: Int { get }
    /// Rows `rows` of the batch for `step`: tokens and labels `[rows.count, S]`.
    func batch(step: Int, rows: Range<Int>) -> TokenBatch
}

extension BatchSource {
    /// The first `size` rows of the batch for `step`: tokens and labels `[size, S]`.
    public func batch(step: Int, size: Int) -> TokenBatch { batch(step: step, rows: 0..<size) }
}

/// The random stream of one row, seeded by a hash of (seed, step, row) so neighbouring steps and rows get unrelated
/// streams (seeding `SeededRandom` with `seed + step` would give streams that are shifts of each other).
/// Bounded draws use our own rejection sampling rather than the standard library's, so the data stays the same
/// across toolchains and a checkpoint resumes onto the same batches anywhere.
struct RowRandom {
    private var generator: SeededRandom

    init(seed: UInt64, step: Int, row: Int) {
        var h = Self.mix(seed)
        h = Self.mix(h ^ UInt64(truncatingIfNeeded: step))
        h = Self.mix(h ^ UInt64(truncatingIfNeeded: row))
        generator = SeededRandom(seed: h)
    }

    /// A uniform integer in `0..<n` (Lemire's multiply-and-reject: no modulo bias). `n` > 0.
    mutating func below(_ n: Int) -> Int {
        let bound = UInt64(n)
        var (high, low) = generator.next().multipliedFullWidth(by: bound)
        if low < bound {
            let threshold = (0 &- bound) % bound
            while low < threshold { (high, low) = generator.next().multipliedFullWidth(by: bound) }
        }
        return Int(high)
    }

    /// `count` distinct values of `0..<n` in random order (a partial Fisher–Yates shuffle). `count` ≤ `n`.
    mutating func distinct(_ count: Int, below n: Int) -> [Int] {
        var pool = Array(0..<n)
        for i in 0..<count { pool.swapAt(i, i + below(n - i)) }
        return Array(pool[0..<count])
    }

    /// The SplitMix64 finaliser: a bijection on 64 bits with full avalanche.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
