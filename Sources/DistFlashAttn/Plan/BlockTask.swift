extension Plan {
    /// One attention block computed by one rank: local rows `rows` of query shard `queryShard` against every key of
    /// key shard `keyShard`, for query heads `heads` (key/value heads `heads / (H / H_kv)`).
    ///
    /// Forward it yields a partial `(O, LSE)` of those query rows; backward it yields a dQ partial of those rows
    /// and dK, dV partials of the whole key shard. Results whose shard the rank does not own go back to the owner.
    /// Rows are a range because the only split any plan needs (the last round of the fold for even P) halves a
    /// block's query rows between two ranks.
    public struct BlockTask: Sendable, Equatable, CustomStringConvertible {
        /// The rank that computes the block.
        public var rank: Int
        /// The rank whose query shard the rows belong to.
        public var queryShard: Int
        /// Local rows of the query shard.
        public var rows: Range<Int>
        /// The rank whose key/value shard the block reads.
        public var keyShard: Int
        /// Query heads.
        public var heads: Range<Int>
        /// Visible (query, key) pairs of the block per head and batch element.
        public var visiblePairs: Int

        public init(rank: Int, queryShard: Int, rows: Range<Int>, keyShard: Int, heads: Range<Int>, visiblePairs: Int) {
            self.rank = rank
            self.queryShard = queryShard
            self.rows = rows
            self.keyShard = keyShard
            self.heads = heads
            self.visiblePairs = visiblePairs
        }

        /// Visible (query, key, head) pairs per batch element: what the block costs.
        public var work: Int { visiblePairs * heads.count }

        public var description: String {
            "block (q\(queryShard)[\(rows.lowerBound)..<\(rows.upperBound)], kv\(keyShard), "
                + "heads \(heads.lowerBound)..<\(heads.upperBound))"
        }
    }
}
