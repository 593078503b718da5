/// Names a region of one shard's data: what it is, whose tokens (`shard`), which local rows and which query
/// heads (key/value contents hold the key/value heads those query heads read).
struct RegionKey: Hashable, CustomStringConvertible {
    var content: Plan.Transfer.Content
    var shard: Int
    var rows: Range<Int>
    var heads: Range<Int>

    init(_ content: Plan.Transfer.Content, _ shard: Int, _ rows: Range<Int>, _ heads: Range<Int>) {
        (self.content, self.shard, self.rows, self.heads) = (content, shard, rows, heads)
    }

    init(_ transfer: Plan.Transfer) {
        self.init(transfer.content, transfer.shard, transfer.rows, transfer.heads)
    }

    /// Whether this region holds all of `other`.
    func contains(_ other: RegionKey) -> Bool {
        content == other.content && shard == other.shard
            && rows.lowerBound <= other.rows.lowerBound && rows.upperBound >= other.rows.upperBound
            && heads.lowerBound <= other.heads.lowerBound && heads.upperBound >= other.heads.upperBound
    }

    var description: String {
        "\(content.rawValue) of shard \(shard) rows \(rows.lowerBound)..<\(rows.upperBound) "
            + "heads \(heads.lowerBound)..<\(heads.upperBound)"
    }
}
