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
        let packedQ = dfa_packed_a_floats(isa, Int32(br), Int32(dim))
        let packedP = dfa_packed_a_floats(isa, Int32(br), Int32(bc))
        let scratch = WorkerScratch(workers: workers, floats: packedQ + br * bc + packedP + 3 * br)
        let queryTiles = queries.tileCount

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
                        let qBase = q.base + ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                        let oBase = o.base + ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                        let lseBase = lse.base + (b * geo.heads + h) * geo.queries + rows.lowerBound

                        let ws = scratch.buffer(worker)
                        let (qp, s, pp) = (ws, ws + packedQ, ws + packedQ + br * bc)
                        let (rowMax, rowSum, rescale) = (pp + packedP, pp + packedP + br, pp + packedP + 2 * br)
                        for r in 0..<m {
                            rowMax[r] = lseBase[r]
                            rowSum[r] = lseBase[r] == -.infinity ? 0 : 1
                        }
                        dfa_pack_a(isa, Int32(m), Int32(dim), qBase, ld, 1, qp)

                        var touched = false
                        for kt in 0..<keys.tileCount {
                            let visibility = mask.visibility(queries, qt, keys, kt)
                            if visibility == .none { continue }
                            touched = true
                            let n = Int32(keys.rows(kt).count)
                            dfa_gemm_packed(isa, Int32(m), n, Int32(dim), scale, qp, keysT.tile(batch: b, kvHead: g, tile: kt),
                                            0, s, bc)
                            if visibility == .partial { mask.apply(to: s, ld: bc, queries, qt, keys, kt) }
                            dfa_online_softmax(isa, Int32(m), n, s, bc, rowMax, rowSum, rescale)
                            for r in 0..<m where rescale[r] != 1 { dfa_scale(Int32(dim), oBase + r * ld, rescale[r]) }
                            dfa_pack_a(isa, Int32(m), n, s, bc, 1, pp)
                            dfa_gemm_packed(isa, Int32(m), Int32(dim), n, 1, pp, valueRows.tile(batch: b, kvHead: g, tile: kt),
                                            1, oBase, ld)
                        }
                        guard touched else { return }
                        for r in 0..<m {
                            let row = oBase + r * ld
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
