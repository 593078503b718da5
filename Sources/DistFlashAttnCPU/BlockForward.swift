import DistFlashAttn
import _CPUKernels

#if canImport(Glibc)
import Glibc
#endif

extension CPUBackend {
    /// Forward of a query block against a key/value block, folded into a running partial result.
    ///
    /// - query `[B, S_q, H, D]` at global `queryPositions` (S_q of them), key/value `[B, S_k, H_kv, D]` at
    ///   `keyPositions`; the mask is decided from those positions.
    /// - `partial` holds (O `[B, S_q, H, D]`, LSE `[B, H, S_q]`) for the keys seen so far (start from
    ///   `AttentionPartial.empty`); on return it covers this block's keys too, exactly as if all keys had been
    ///   seen in one pass. Tiles the mask hides entirely are skipped.
    ///
    /// Per query tile the running state is the online softmax (m, l, O·l) seeded from the partial:
    /// m = LSE, l = 1 (or 0 when LSE = −∞), accumulator = O.
    public func forward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                        mask: AttentionMask, scale: Float, into partial: inout AttentionPartial) throws {
        let geo = try BlockGeometry(query: query, key: key, value: value, queryPositions: queryPositions,
                                    keyPositions: keyPositions)
        try partial.output.requireShape(query.shape, "partial O")
        try partial.logSumExp.requireShape([geo.batch, geo.heads, geo.queries], "partial LSE")
        if geo.queries == 0 || geo.keys == 0 { return }

        let queries = TiledTokens(positions: queryPositions, mask: mask, tileSize: queryTile)
        let keys = TiledTokens(positions: keyPositions, mask: mask, tileSize: keyTile)
        let keysT = PackedTiles(key, keys: keys, form: .transposed, workers: workers, isa: isa)
        let valueRows = PackedTiles(value, keys: keys, form: .rows, workers: workers, isa: isa)

        let (br, bc, dim) = (queryTile, keyTile, geo.dim)
        let scratch = WorkerScratch(workers: workers, floats: 2 * br * dim + br * bc + 3 * br)
        let queryTiles = queries.tileCount
        let panel = Int(dfa_panel_width(isa))

        query.scalars.withUnsafeBufferPointer { q in
            partial.output.scalars.withUnsafeMutableBufferPointer { o in
                partial.logSumExp.scalars.withUnsafeMutableBufferPointer { lse in
                    let (q, o, lse) = (SharedFloats(q.baseAddress!), SharedFloats(o.baseAddress!),
                                       SharedFloats(lse.baseAddress!))
                    parallelFor(count: geo.batch * geo.heads * queryTiles, workers: workers) { task, worker in
                        // Later query tiles see more keys under a causal mask: hand them out first.
                        let qt = queryTiles - 1 - task % queryTiles
                        let h = (task / queryTiles) % geo.heads, b = task / (queryTiles * geo.heads)
                        let g = h / geo.group
                        let rows = queries.rows(qt)
                        let m = rows.count, ld = geo.heads * dim
                        let offset = ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                        let lseBase = lse.base + (b * geo.heads + h) * geo.queries + rows.lowerBound

                        // Q and the running output as contiguous m×D tiles (the tensor's row stride H·D is often
                        // a multiple of 4 KiB, which would alias the rows in L1).
                        let ws = scratch.buffer(worker)
                        let (qTile, oTile, s) = (ws, ws + br * dim, ws + 2 * br * dim)
                        let (rowMax, rowSum, rescale) = (s + br * bc, s + br * bc + br, s + br * bc + 2 * br)
                        for r in 0..<m {
                            (qTile + r * dim).update(from: q.base + offset + r * ld, count: dim)
                            (oTile + r * dim).update(from: o.base + offset + r * ld, count: dim)
                            rowMax[r] = lseBase[r]
                            rowSum[r] = lseBase[r] == -.infinity ? 0 : 1
                        }

                        var touched = false
                        for kt in 0..<keys.tileCount {
                            let visibility = mask.visibility(queries, qt, keys, kt)
                            if visibility == .none { continue }
                            touched = true
                            // Columns c0..<c1 of the key tile can be visible; c0 rounded down to a B panel.
                            var c0 = 0, c1 = keys.rows(kt).count
                            if visibility == .partial {
                                let run = mask.visibleKeys(queries, qt, keys, kt)
                                if run.isEmpty { continue }
                                (c0, c1) = (run.lowerBound / panel * panel, run.upperBound)
                            }
                            let (n, tileRows) = (Int32(c1 - c0), Int32(keys.rows(kt).count))
                            // S = scale · Q·Kᵀ  (m × n)
                            dfa_gemm(isa, Int32(m), n, Int32(dim), scale, qTile, dim,
                                     keysT.tile(batch: b, kvHead: g, tile: kt) + c0 * dim, Int32(dim), 0, s, bc)
                            if visibility == .partial {
                                mask.apply(to: s, ld: bc, queries, qt, keys, kt, columns: c0..<c1)
                            }
                            dfa_online_softmax(isa, Int32(m), n, s, bc, rowMax, rowSum, rescale)
                            for r in 0..<m where rescale[r] != 1 { dfa_scale(Int32(dim), oTile + r * dim, rescale[r]) }
                            // O·l += P·V  (m × D), over the key rows c0..<c1
                            dfa_gemm(isa, Int32(m), Int32(dim), n, 1, s, bc,
                                     valueRows.tile(batch: b, kvHead: g, tile: kt) + c0 * panel, tileRows, 1, oTile, dim)
                        }
                        guard touched else { return }
                        for r in 0..<m {
                            let row = o.base + offset + r * ld
                            row.update(from: oTile + r * dim, count: dim)
                            if rowSum[r] == 0 {
                                row.update(repeating: 0, count: dim)
                                lseBase[r] = -.infinity
                            } else {
                                dfa_scale(Int32(dim), row, 1 / rowSum[r])
                                lseBase[r] = rowMax[r] + logf(rowSum[r])
                            }
                        }
                    }
                }
            }
        }
    }
}
