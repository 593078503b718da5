/// ZeRO-1's split of a flat vector of `count` elements over `ranks` ranks into equal shares, as NCCL's
/// reduce-scatter and all-gather need them: the vector is padded to ⌈count / ranks⌉ · ranks elements, rank r
/// holds `r·share ..< (r+1)·share` of it and owns the real elements among those (the padding is nobody's).
public struct EqualShards: Sendable, Equatable {
    public let count: Int
    public let ranks: Int

    public init(count: Int, ranks: Int) {
        precondition(count >= 0 && ranks >= 1, "EqualShards: count \(count) must be ≥ 0 and ranks \(ranks) ≥ 1")
        (self.count, self.ranks) = (count, ranks)
    }

    /// Elements per rank.
    public var share: Int { (count + ranks - 1) / ranks }
    /// The padded length, `share · ranks` (less than `count + ranks`).
    public var padded: Int { share * ranks }

    /// Rank `rank`'s range of the padded vector.
    public func shard(_ rank: Int) -> Range<Int> { rank * share..<(rank + 1) * share }

    /// The real elements of rank `rank`'s shard (empty for a shard wholly in the padding); in rank order they
    /// tile `0..<count`.
    public func owned(_ rank: Int) -> Range<Int> {
        let shard = shard(rank)
        return min(shard.lowerBound, count)..<min(shard.upperBound, count)
    }

    /// The pieces of each tensor (its flat range in `spans`, in order) inside rank `rank`'s shard: the tensor's
    /// index, the piece's flat range, and the same elements' range within the shard.
    public func segments(_ rank: Int, spans: [Range<Int>]) -> [(tensor: Int, flat: Range<Int>, local: Range<Int>)] {
        let shard = shard(rank)
        return spans.enumerated().compactMap { t, span in
            let lower = max(span.lowerBound, shard.lowerBound), upper = min(span.upperBound, shard.upperBound)
            guard lower < upper else { return nil }
            return (t, lower..<upper, lower - shard.lowerBound..<upper - shard.lowerBound)
        }
    }
}
