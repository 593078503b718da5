import DistFlashAttn

/// The tokens of one block (query rows or key rows) cut into tiles, with each tile's bounds on global position
/// and document, so whole tiles can be skipped or left unmasked.
struct TiledTokens: Sendable {
    let positions: [Int]
    let documents: [Int32]
    let tileSize: Int
    let positionBounds: [ClosedRange<Int>]
    let documentBounds: [ClosedRange<Int32>]

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

    /// Sets the masked entries of a score tile (row stride `ld`) to −∞.
    func apply(to scores: UnsafeMutablePointer<Float>, ld: Int,
               _ queries: TiledTokens, _ queryTile: Int, _ keys: TiledTokens, _ keyTile: Int) {
        let rows = queries.rows(queryTile), cols = keys.rows(keyTile)
        for (r, i) in rows.enumerated() {
            let q = queries.positions[i], qd = queries.documents[i]
            let row = scores + r * ld
            for (c, j) in cols.enumerated()
            where !allows(query: q, key: keys.positions[j], queryDocument: qd, keyDocument: keys.documents[j]) {
                row[c] = -.infinity
            }
        }
    }

    /// Sets the masked entries of a transposed score tile (keys × queries, row stride `ld`) to −∞.
    func applyTransposed(to scores: UnsafeMutablePointer<Float>, ld: Int,
                         _ queries: TiledTokens, _ queryTile: Int, _ keys: TiledTokens, _ keyTile: Int) {
        let rows = queries.rows(queryTile), cols = keys.rows(keyTile)
        for (c, j) in cols.enumerated() {
            let k = keys.positions[j], kd = keys.documents[j]
            let row = scores + c * ld
            for (r, i) in rows.enumerated()
            where !allows(query: queries.positions[i], key: k, queryDocument: queries.documents[i], keyDocument: kd) {
                row[r] = -.infinity
            }
        }
    }
}
