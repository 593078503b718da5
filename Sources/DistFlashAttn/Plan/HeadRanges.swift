extension AttentionProblem {
    /// The key/value heads that query heads `heads` read: query head h reads key/value head h / (H / H_kv).
    public func keyValueHeads(serving heads: Range<Int>) -> Range<Int> {
        guard !heads.isEmpty else { return 0..<0 }
        return heads.lowerBound / group..<(heads.upperBound - 1) / group + 1
    }

    /// The H query heads split as evenly as possible over P ranks: the first H mod P ranks get ⌈H/P⌉ heads, the
    /// rest ⌊H/P⌋ (none when H < P).
    public func headSlice(rank: Int, of ranks: Int) -> Range<Int> {
        let start = { (r: Int) in r * (self.heads / ranks) + min(r, self.heads % ranks) }
        return start(rank)..<start(rank + 1)
    }
}
