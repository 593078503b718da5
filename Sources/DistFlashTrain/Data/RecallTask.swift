import DistFlashAttn

/// Multi-query associative recall that only a model seeing far back can solve.
///
/// Each row stores `pairs` key–value pairs `k v` among filler tokens near the start, then after a gap of at least
/// `minimumDistance` positions asks `queries` of the keys again. At a query key the next-token label is that key's
/// value; every other label is −1. One row, S = sequence length, Q = queries, R = S − 2Q − minimumDistance:
/// ```
///  position   0    1 … … … … … … … … … R     R+1 … S−2Q−1   S−2Q  S−2Q+1  …  S−2  S−1
///  token      BOS  f k₃ v₃ f f k₁ v₁ … k₂ v₂ f  …  f        k₁    v₁      …  k₃   v₃
///  label      −1   −1  …  everywhere  …  −1  −1  …  −1      v₁    −1      …  v₃   −1
///                  └─── pairs live here ───┘ └─ filler ─┘   └─ queries: kᵢ, then vᵢ as input ─┘
/// ```
/// Keys within a row are distinct, so each query has one answer; the queried pairs are distinct and in random
/// order; values are drawn uniformly and independently (with repetition). The distance from a query to its
/// answer (query position − value position) is always ≥ `minimumDistance`.
///
/// What a model can reach: let its reach be the number of positions a query can draw on, itself included — W for
/// one sliding-window layer of W tokens, L·(W − 1) + 1 for L stacked such layers, S for full causal attention. With
/// reach ≤ `minimumDistance` no query sees its key or value; everything in view (filler, other pairs, other
/// queries) is independent of the answer, so the best possible accuracy is chance, `1 / valueCount`. With full
/// causal attention the task is exactly solvable (an induction head: find the earlier copy of this key, copy the
/// token after it), so accuracy can reach 100 %.
///
/// Labels sit only on query answers, not on the pair tokens or filler (a language-model loss there): those
/// positions are unpredictable by construction (random values, random filler), so their loss would be an
/// irreducible floor of about log(valueCount) nats that adds gradient noise and teaches nothing about retrieval.
/// With answers only, every labelled position is solvable by retrieval alone, the loss falls towards 0 as the
/// model learns it, and loss and accuracy both read directly as retrieval quality.
public struct RecallTask: BatchSource, Equatable {
    /// S.
    public let sequenceLength: Int
    /// Key–value pairs stored per row.
    public let pairs: Int
    /// Keys asked again at the end of each row (distinct pairs, ≤ `pairs`).
    public let queries: Int
    /// Least distance from a query key to the value it asks for.
    public let minimumDistance: Int
    /// Number of distinct key tokens.
    public let keyCount: Int
    /// Number of distinct value tokens (chance accuracy is 1 / `valueCount`).
    public let valueCount: Int
    /// Number of distinct filler tokens.
    public let fillerCount: Int
    public let seed: UInt64

    /// The token that starts every row.
    public static let beginToken: Int32 = 0

    /// Throws `invalidProblem` naming the value and the rule when the pairs, the gap and the queries do not fit in
    /// `sequenceLength` (S ≥ 2·pairs + minimumDistance + 2·queries), or a count is out of range.
    public init(sequenceLength: Int, pairs: Int, queries: Int, minimumDistance: Int, keyCount: Int = 64,
                valueCount: Int = 64, fillerCount: Int = 16, seed: UInt64) throws {
        func fail(_ message: String) -> DistFlashError { DistFlashError(.invalidProblem, "recall task: \(message)") }
        guard pairs >= 1 else { throw fail("pairs = \(pairs): must be ≥ 1") }
        guard (1...pairs).contains(queries) else {
            throw fail("queries = \(queries): must be in 1...pairs (\(pairs)); each query asks a different pair")
        }
        guard minimumDistance >= 1 else { throw fail("minimum distance = \(minimumDistance): must be ≥ 1") }
        guard keyCount >= pairs else {
            throw fail("key count = \(keyCount): must be ≥ pairs (\(pairs)) so the keys of a row are distinct")
        }
        guard valueCount >= 2 else { throw fail("value count = \(valueCount): must be ≥ 2") }
        guard fillerCount >= 1 else { throw fail("filler count = \(fillerCount): must be ≥ 1") }
        guard 1 + fillerCount + keyCount + valueCount <= Int(Int32.max) else {
            throw fail("vocabulary of \(1 + fillerCount + keyCount + valueCount) tokens does not fit Int32 ids")
        }
        let needed = 2 * pairs + minimumDistance + 2 * queries
        guard sequenceLength >= needed else {
            throw fail("sequence length = \(sequenceLength) is too short for \(pairs) pairs, a gap of "
                + "\(minimumDistance) and \(queries) queries: it must be ≥ 2·pairs + minimum distance + "
                + "2·queries = \(needed); lengthen it or lower pairs, queries or the distance")
        }
        (self.sequenceLength, self.pairs, self.queries, self.minimumDistance) =
            (sequenceLength, pairs, queries, minimumDistance)
        (self.keyCount, self.valueCount, self.fillerCount, self.seed) = (keyCount, valueCount, fillerCount, seed)
    }

    /// 1 (begin) + fillers + keys + values; ids in that order.
    public var vocabularySize: Int { 1 + fillerCount + keyCount + valueCount }

    /// Token id of filler `i` ∈ `0..<fillerCount`.
    public func filler(_ i: Int) -> Int32 { Int32(1 + i) }
    /// Token id of key `i` ∈ `0..<keyCount`.
    public func key(_ i: Int) -> Int32 { Int32(1 + fillerCount + i) }
    /// Token id of value `i` ∈ `0..<valueCount`.
    public func value(_ i: Int) -> Int32 { Int32(1 + fillerCount + keyCount + i) }

    /// The best accuracy of a model whose reach is ≤ `minimumDistance`: 1 / `valueCount`.
    public var chanceAccuracy: Double { 1 / Double(valueCount) }

    /// Position of the first query key, S − 2Q.
    public var firstQueryPosition: Int { sequenceLength - 2 * queries }

    /// Rows `rows` of step `step`: tokens and labels `[rows.count, S]`, each row a pure function of
    /// (seed, step, row).
    public func batch(step: Int, rows: Range<Int>) -> TokenBatch {
        var tokens: [Int32] = [], labels: [Int32] = []
        tokens.reserveCapacity(rows.count * sequenceLength)
        labels.reserveCapacity(rows.count * sequenceLength)
        for row in rows {
            let (rowTokens, rowLabels) = makeRow(RowRandom(seed: seed, step: step, row: row))
            tokens += rowTokens
            labels += rowLabels
        }
        return TokenBatch(batch: rows.count, sequence: sequenceLength, tokens: tokens, labels: labels)
    }

    /// One row: tokens and labels `[S]`.
    private func makeRow(_ random: RowRandom) -> (tokens: [Int32], labels: [Int32]) {
        var random = random
        let keys = random.distinct(pairs, below: keyCount).map(key)
        let values = (0..<pairs).map { _ in value(random.below(valueCount)) }

        var tokens = [Int32](repeating: 0, count: sequenceLength)
        var labels = [Int32](repeating: -1, count: sequenceLength)
        tokens[0] = Self.beginToken
        // Pairs go in positions 1...R, R = last value position that keeps the gap. Seen as units (a pair is one
        // unit of two tokens, a filler one unit of one token) the region has R − pairs units; choosing which of
        // them are pairs uniformly places the pairs uniformly without overlap.
        let regionEnd = firstQueryPosition - minimumDistance
        let units = regionEnd - pairs
        let pairUnits = Set(random.distinct(pairs, below: units))
        var position = 1, placed = 0
        for unit in 0..<units {
            if pairUnits.contains(unit) {
                tokens[position] = keys[placed]
                tokens[position + 1] = values[placed]
                position += 2
                placed += 1
            } else {
                tokens[position] = filler(random.below(fillerCount))
                position += 1
            }
        }
        for gap in position..<firstQueryPosition { tokens[gap] = filler(random.below(fillerCount)) }

        for (j, pair) in random.distinct(queries, below: pairs).enumerated() {
            let at = firstQueryPosition + 2 * j
            tokens[at] = keys[pair]
            labels[at] = values[pair]
            tokens[at + 1] = values[pair]
        }
        return (tokens, labels)
    }

    /// Fraction of query answers predicted right: `predictions` `[B, S]` holds the predicted next token at every
    /// position (the argmax of the logits); only positions with a label count. Throws `shapeMismatch` unless
    /// `predictions` has B·S entries, `invalidProblem` if the batch has no labels.
    public func accuracy(predictions: [Int32], batch: TokenBatch) throws -> Double {
        guard predictions.count == batch.labels.count else {
            throw DistFlashError(.shapeMismatch, "recall accuracy: predictions has \(predictions.count) entries, "
                + "the batch [B, S] = [\(batch.batch), \(batch.sequence)] needs \(batch.labels.count)")
        }
        var asked = 0, right = 0
        for (prediction, label) in zip(predictions, batch.labels) where label >= 0 {
            asked += 1
            if prediction == label { right += 1 }
        }
        guard asked > 0 else {
            throw DistFlashError(.invalidProblem, "recall accuracy: the batch has no labelled query positions")
        }
        return Double(right) / Double(asked)
    }
}
