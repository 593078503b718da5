import DistFlashAttn

/// The tokens of one block (query rows or key rows) cut into tiles, with each tile's bounds on global position
/// and document, so whole tiles can be skipped or left unmasked.
struct TiledTokens: Sendable {
    let positions: [Int]
    let documents: [Int32]
    let tileSize: Int
    let positionBounds: [ClosedRange<Int>]
    let documentBounds: [ClosedRange<Int32>]
    /// Positions never decrease (true for every layout), so a tile's visible keys form one run.
    let sorted: Bool

    init(positions: [Int], mask: AttentionMask, tileSize: Int) {
        self.positions = positions
        self.documents = mask.documentIndices(of: positions)
        self.tileSize = tileSize
        var pb: [ClosedRange<Int>] = [], db: [ClosedRange<Int32>] = []
        for start in stride(from: 0, to: positions.count, by: tileSize) {
            let tile = start..<min(start + tileSize, positions.count)
            pb.append(positions[tile].min()!...positions[tile].max()!)
            db.append(documents[tile].min()!...documents[tile].max()!)
        }
        positionBounds = pb
        documentBounds = db
        sorted = zip(positions, positions.dropFirst()).allSatisfy { $0 <= $1 }
    }

    var count: Int { positions.count }
    var tileCount: Int { positionBounds.count }
    func rows(_ tile: Int) -> Range<Int> { tile * tileSize..<min((tile + 1) * tileSize, positions.count) }
}

extension AttentionMask {
    func visibility(_ queries: TiledTokens, _ queryTile: Int, _ keys: TiledTokens, _ keyTile: Int) -> Visibility {
        visibility(queries: queries.positionBounds[queryTile], keys: keys.positionBounds[keyTile],
                   queryDocuments: queries.documentBounds[queryTile], keyDocuments: keys.documentBounds[keyTile])
    }

    /// The run of a key tile's rows (local indices) that any query of the query tile may see, from the bounds of
    /// the query tile: causal kinds hide keys after its last query, windows keys before its first query's window,
    /// documents keys outside its documents. Work outside the run is skipped. The whole tile if keys are unsorted.
    func visibleKeys(_ queries: TiledTokens, _ queryTile: Int, _ keys: TiledTokens, _ keyTile: Int) -> Range<Int> {
        let tile = keys.rows(keyTile)
        guard keys.sorted else { return 0..<tile.count }
        let q = queries.positionBounds[queryTile], qd = queries.documentBounds[queryTile]
        /// First row of the tile whose key satisfies `isPast` (which must be monotone along the tile).
        func first(_ isPast: (Int) -> Bool) -> Int {
            var (low, high) = (tile.lowerBound, tile.upperBound)
            while low < high {
                let mid = (low + high) / 2
                if isPast(mid) { high = mid } else { low = mid + 1 }
            }
            return low
        }
        var lower = tile.lowerBound, upper = tile.upperBound
        if kind != .full { upper = first { keys.positions[$0] > q.upperBound } }
        if case .window(let w) = kind { lower = first { keys.positions[$0] > q.lowerBound - w } }
        if hasDocuments {
            lower = max(lower, first { keys.documents[$0] >= qd.lowerBound })
            upper = min(upper, first { keys.documents[$0] > qd.upperBound })
        }
        return (lower - tile.lowerBound)..<(max(lower, upper) - tile.lowerBound)
    }

    /// Sets the masked entries of a score tile to −∞: row r holds the tile's query r, column c its key
    /// `columns.lowerBound + c`; row stride `ld`.
    func apply(to scores: UnsafeMutablePointer<Float>, ld: Int, _ queries: TiledTokens, _ queryTile: Int,
               _ keys: TiledTokens, _ keyTile: Int, columns: Range<Int>) {
        let rows = queries.rows(queryTile), first = keys.rows(keyTile).lowerBound + columns.lowerBound
        for (r, i) in rows.enumerated() {
            let q = queries.positions[i], qd = queries.documents[i]
            let row = scores + r * ld
            for c in 0..<columns.count
            where !allows(query: q, key: keys.positions[first + c], queryDocument: qd, keyDocument: keys.documents[first + c]) {
                row[c] = -.infinity
            }
        }
    }

    /// The same for a transposed tile: row c holds key `rows.lowerBound + c` of the key tile, column r query r.
    func applyTransposed(to scores: UnsafeMutablePointer<Float>, ld: Int, _ queries: TiledTokens, _ queryTile: Int,
                         _ keys: TiledTokens, _ keyTile: Int, rows keyRows: Range<Int>) {
        let queryRows = queries.rows(queryTile), first = keys.rows(keyTile).lowerBound + keyRows.lowerBound
        for c in 0..<keyRows.count {
            let k = keys.positions[first + c], kd = keys.documents[first + c]
            let row = scores + c * ld
            for (r, i) in queryRows.enumerated()
            where !allows(query: queries.positions[i], key: k, queryDocument: queries.documents[i], keyDocument: kd) {
                row[r] = -.infinity
            }
        }
    }
}
