import DistFlashAttn

/// What AdamW remembers between steps, for the flat parameter indices `shard` (see `Parameters.flatScalars`):
/// the number of updates taken and the first and second moments `m`, `v` (`[shard.count]` each).
/// A full optimizer's shard is `0..<scalarCount`; a ZeRO-1 rank's is its slice.
public struct AdamWState: Sendable, Equatable {
    /// Updates taken so far (t in the bias corrections 1 − β^t).
    public var step: Int
    public var shard: Range<Int>
    /// First moment m, `[shard.count]`.
    public var m: [Float]
    /// Second moment v, `[shard.count]`.
    public var v: [Float]

    /// Throws `shapeMismatch` unless `m` and `v` each have `shard.count` values, `invalidProblem` if `step` < 0.
    public init(step: Int, shard: Range<Int>, m: [Float], v: [Float]) throws {
        guard m.count == shard.count, v.count == shard.count else {
            throw DistFlashError(.shapeMismatch, "AdamW state for flat range \(shard) needs \(shard.count) moment "
                + "values each, got m \(m.count) and v \(v.count)")
        }
        guard step >= 0 else { throw DistFlashError(.invalidProblem, "AdamW state: step = \(step) must be ≥ 0") }
        (self.step, self.shard, self.m, self.v) = (step, shard, m, v)
    }

    /// Zero moments at step 0.
    public init(shard: Range<Int>) {
        (step, self.shard) = (0, shard)
        m = [Float](repeating: 0, count: shard.count)
        v = m
    }

    /// The state of the flat range `range` (inside `shard`): how a ZeRO-1 rank takes its slice of a full state
    /// restored from a checkpoint.
    public func slice(_ range: Range<Int>) throws -> AdamWState {
        guard range.lowerBound >= shard.lowerBound, range.upperBound <= shard.upperBound else {
            throw DistFlashError(.shapeMismatch, "AdamW state: cannot slice \(range) out of the shard \(shard)")
        }
        let local = range.lowerBound - shard.lowerBound..<range.upperBound - shard.lowerBound
        return try AdamWState(step: step, shard: range, m: Array(m[local]), v: Array(v[local]))
    }

    /// ZeRO-1 shards joined into one state (what a checkpoint stores). Throws `shapeMismatch` unless the shards,
    /// in order, are adjacent, and `invalidProblem` unless they agree on the step.
    public static func gathered(_ shards: [AdamWState]) throws -> AdamWState {
        guard let first = shards.first else {
            throw DistFlashError(.invalidProblem, "AdamW state: nothing to gather (no shards)")
        }
        var joined = first
        for next in shards.dropFirst() {
            guard next.shard.lowerBound == joined.shard.upperBound else {
                throw DistFlashError(.shapeMismatch, "AdamW state: shard \(next.shard) does not start where the "
                    + "previous ones end (\(joined.shard.upperBound)); pass the shards in rank order")
            }
            guard next.step == first.step else {
                throw DistFlashError(.invalidProblem, "AdamW state: shard \(next.shard) is at step \(next.step), "
                    + "shard \(first.shard) at step \(first.step); every rank must have taken the same steps")
            }
            joined.shard = joined.shard.lowerBound..<next.shard.upperBound
            joined.m += next.m
            joined.v += next.v
        }
        return joined
    }
}
