/// Counts visible (query, key) pairs between query positions and the keys one rank holds, without visiting pairs.
///
/// Every mask here lets query i see one interval of key positions (inside its document d = [start_d, end_d]):
/// ```
/// full        start_d … end_d
/// causal      start_d … i
/// window(W)   max(start_d, i − W + 1) … i
/// ```
/// so the count for query i is the number of the rank's (sorted) key positions in that interval, two binary
/// searches. Cost: O(queries · log(S/P)).
struct VisiblePairCounter: Sendable {
    let mask: AttentionMask
    let layout: Layout
    /// Increasing global positions of each rank.
    let positions: [[Int]]
    /// First position of each document (just 0 without documents).
    private let documentStarts: [Int]

    init(problem: AttentionProblem, layout: Layout) {
        self.mask = problem.mask
        self.layout = layout
        self.positions = (0..<layout.ranks).map { layout.positions(rank: $0) }
        var starts: [Int] = []
        var next = 0
        for length in problem.mask.documentLengths ?? [problem.sequence] {
            starts.append(next)
            next += length
        }
        self.documentStarts = starts
    }

    /// The key positions query `query` may see, or nil when it sees none.
    func visibleKeys(of query: Int) -> ClosedRange<Int>? {
        let document = mask.documentIndex(of: query)
        let first = documentStarts[document]
        let last = document + 1 < documentStarts.count ? documentStarts[document + 1] - 1 : layout.sequence - 1
        switch mask.kind {
        case .full: return first...last
        case .causal: return first...query
        case .window(let w): return max(first, query - w + 1)...query
        }
    }

    /// Visible pairs between local rows `rows` of rank `queryShard` and all keys of rank `keyShard`.
    func count(queryShard: Int, rows: Range<Int>, keyShard: Int) -> Int {
        rowCounts(queryShard: queryShard, rows: rows, keyShard: keyShard).reduce(0, +)
    }

    /// Visible keys of rank `keyShard` for each local row in `rows` of rank `queryShard`.
    func rowCounts(queryShard: Int, rows: Range<Int>, keyShard: Int) -> [Int] {
        let keys = positions[keyShard]
        return rows.map { row in
            guard let visible = visibleKeys(of: positions[queryShard][row]) else { return 0 }
            return firstIndex(in: keys, notBelow: visible.upperBound + 1)
                - firstIndex(in: keys, notBelow: visible.lowerBound)
        }
    }

    /// Index of the first element ≥ `value` in increasing `sorted` (its count when none is).
    private func firstIndex(in sorted: [Int], notBelow value: Int) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid] < value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
