import DistFlashAttn
import _CPUKernels

extension CPUBackend {
    /// The backward preprocess: δ = rowsum(dO ∘ O), one value per query row and head.
    /// - output, outputGrad: `[B, S, H, D]`; returns δ `[B, H, S]`.
    public func backwardPreprocess(output: Tensor, outputGrad: Tensor) throws -> Tensor {
        try outputGrad.requireShape(output.shape, "dO")
        let (batch, sequence, heads, dim) = (output.shape[0], output.shape[1], output.shape[2], output.shape[3])
        var delta = Tensor(shape: [batch, heads, sequence])
        output.scalars.withUnsafeBufferPointer { o in
            outputGrad.scalars.withUnsafeBufferPointer { dO in
                delta.scalars.withUnsafeMutableBufferPointer { out in
                    let (o, dO, out) = (SharedFloats(o.baseAddress!), SharedFloats(dO.baseAddress!),
                                        SharedFloats(out.baseAddress!))
                    parallelFor(count: batch * sequence, workers: workers) { task, _ in
                        for h in 0..<heads {
                            let row = (task * heads + h) * dim
                            var sum: Float = 0
                            for d in 0..<dim { sum += o.base[row + d] * dO.base[row + d] }
                            out.base[((task / sequence) * heads + h) * sequence + task % sequence] = sum
                        }
                    }
                }
            }
        }
        return delta
    }

    /// Backward of a query block against a key/value block, accumulated into `grads`.
    ///
    /// - query, outputGrad `[B, S_q, H, D]`; key, value `[B, S_k, H_kv, D]`; logSumExp, delta `[B, H, S_q]` are
    ///   the *final* LSE of the forward and δ = rowsum(dO ∘ O) of the final output.
    /// - grads: dQ `[B, S_q, H, D]` += this block's part; dK, dV `[B, S_k, H_kv, D]` += this block's part, summed
    ///   over the query heads of each group.
    ///
    /// Per tile pair: P = exp(scale·Q·Kᵀ − LSE), dP = dO·Vᵀ, dS = P ∘ (dP − δ);
    /// dV += Pᵀ·dO, dK += scale·dSᵀ·Q, dQ += scale·dS·K.
    /// Work is split by (batch, kv head) so dK/dV rows have one owner and the group's dQ rows too; when that gives
    /// fewer tasks than threads, key tiles are dealt out in chunks and chunks after the first accumulate dQ into
    /// scratch copies summed at the end.
    public func backward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                         mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                         into grads: inout AttentionGradients) throws {
        let geo = try BlockGeometry(query: query, key: key, value: value, queryPositions: queryPositions,
                                    keyPositions: keyPositions)
        try outputGrad.requireShape(query.shape, "dO")
        try logSumExp.requireShape([geo.batch, geo.heads, geo.queries], "LSE")
        try delta.requireShape([geo.batch, geo.heads, geo.queries], "delta")
        try grads.query.requireShape(query.shape, "dQ")
        try grads.key.requireShape(key.shape, "dK")
        try grads.value.requireShape(key.shape, "dV")
        if geo.queries == 0 || geo.keys == 0 { return }

        let queries = TiledTokens(positions: queryPositions, mask: mask, tileSize: queryTile)
        let keys = TiledTokens(positions: keyPositions, mask: mask, tileSize: keyTile)
        let keysT = PackedTiles(key, keys: keys, form: .transposed, workers: workers, isa: isa)
        let valuesT = PackedTiles(value, keys: keys, form: .transposed, workers: workers, isa: isa)
        let keyRows = PackedTiles(key, keys: keys, form: .rows, workers: workers, isa: isa)

        let owners = geo.batch * geo.kvHeads
        let chunks = owners >= workers ? 1 : min(keys.tileCount, (2 * workers + owners - 1) / owners)
        var dqScratch = [Float](repeating: 0, count: (chunks - 1) * query.count)

        let (br, bc, dim) = (queryTile, keyTile, geo.dim)
        let queryTiles = queries.tileCount
        let packedRowsA = dfa_packed_a_floats(isa, Int32(br), Int32(dim))
        let packedRowsB = dfa_packed_b_floats(isa, Int32(br), Int32(dim))
        let perQueryTile = 2 * packedRowsA + 2 * packedRowsB
        let packedTile = max(dfa_packed_a_floats(isa, Int32(br), Int32(bc)), dfa_packed_a_floats(isa, Int32(bc), Int32(br)))
        let scratch = WorkerScratch(workers: workers, floats: queryTiles * perQueryTile + 2 * br * bc + packedTile)

        withUnsafeBuffers(query, outputGrad, logSumExp, delta) { q, dO, lse, dlt in
            grads.query.scalars.withUnsafeMutableBufferPointer { dq in
                grads.key.scalars.withUnsafeMutableBufferPointer { dk in
                    grads.value.scalars.withUnsafeMutableBufferPointer { dv in
                        dqScratch.withUnsafeMutableBufferPointer { extra in
                            let (dq, dk, dv) = (SharedFloats(dq.baseAddress!), SharedFloats(dk.baseAddress!),
                                                SharedFloats(dv.baseAddress!))
                            let extra = extra.baseAddress.map(SharedFloats.init)
                            parallelFor(count: owners * chunks, workers: workers) { task, worker in
                                let chunk = task % chunks, g = (task / chunks) % geo.kvHeads
                                let b = task / (chunks * geo.kvHeads)
                                let dqOut = chunk == 0 ? dq.base : extra!.base + (chunk - 1) * query.count
                                let ws = scratch.buffer(worker)
                                let s = ws + queryTiles * perQueryTile, dp = s + br * bc, pa = dp + br * bc
                                let ldq = geo.heads * dim, ldk = geo.kvHeads * dim

                                for h in g * geo.group..<(g + 1) * geo.group {
                                    // Query-side operands of this head, packed once for all key tiles.
                                    for qt in 0..<queryTiles {
                                        let rows = queries.rows(qt)
                                        let offset = ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                                        let slot = ws + qt * perQueryTile
                                        let m = Int32(rows.count), d = Int32(dim)
                                        dfa_pack_a(isa, m, d, q.base + offset, ldq, 1, slot)
                                        dfa_pack_a(isa, m, d, dO.base + offset, ldq, 1, slot + packedRowsA)
                                        dfa_pack_b(isa, m, d, q.base + offset, ldq, 1, slot + 2 * packedRowsA)
                                        dfa_pack_b(isa, m, d, dO.base + offset, ldq, 1, slot + 2 * packedRowsA + packedRowsB)
                                    }
                                    for kt in stride(from: chunk, to: keys.tileCount, by: chunks) {
                                        let cols = keys.rows(kt)
                                        let n = Int32(cols.count), d = Int32(dim)
                                        let kvOffset = ((b * geo.keys + cols.lowerBound) * geo.kvHeads + g) * dim
                                        for qt in 0..<queryTiles {
                                            let visibility = mask.visibility(queries, qt, keys, kt)
                                            if visibility == .none { continue }
                                            let rows = queries.rows(qt)
                                            let m = Int32(rows.count)
                                            let slot = ws + qt * perQueryTile
                                            let (qA, dOA) = (slot, slot + packedRowsA)
                                            let (qB, dOB) = (slot + 2 * packedRowsA, slot + 2 * packedRowsA + packedRowsB)
                                            let stat = (b * geo.heads + h) * geo.queries + rows.lowerBound

                                            dfa_gemm_packed(isa, m, n, d, scale, qA, keysT.tile(batch: b, kvHead: g, tile: kt), 0, s, bc)
                                            if visibility == .partial { mask.apply(to: s, ld: bc, queries, qt, keys, kt) }
                                            dfa_gemm_packed(isa, m, n, d, 1, dOA, valuesT.tile(batch: b, kvHead: g, tile: kt), 0, dp, bc)
                                            dfa_softmax_backward(isa, m, n, s, bc, dp, bc, lse.base + stat, dlt.base + stat)
                                            // dV += Pᵀ·dO
                                            dfa_pack_a(isa, n, m, s, 1, bc, pa)
                                            dfa_gemm_packed(isa, n, d, m, 1, pa, dOB, 1, dv.base + kvOffset, ldk)
                                            // dK += scale·dSᵀ·Q
                                            dfa_pack_a(isa, n, m, dp, 1, bc, pa)
                                            dfa_gemm_packed(isa, n, d, m, scale, pa, qB, 1, dk.base + kvOffset, ldk)
                                            // dQ += scale·dS·K
                                            dfa_pack_a(isa, m, n, dp, bc, 1, pa)
                                            let qOffset = ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                                            dfa_gemm_packed(isa, m, d, n, scale, pa, keyRows.tile(batch: b, kvHead: g, tile: kt), 1,
                                                            dqOut + qOffset, ldq)
                                        }
                                    }
                                }
                            }
                            // Fold the scratch dQ of later chunks into dQ.
                            if let extra {
                                let total = query.count, copies = chunks - 1
                                let slice = 1 << 16
                                parallelFor(count: (total + slice - 1) / slice, workers: workers) { part, _ in
                                    for c in 0..<copies {
                                        let src = extra.base + c * total
                                        for i in part * slice..<min(total, (part + 1) * slice) { dq.base[i] += src[i] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Read-only base pointers of four tensors for the duration of `body`.
private func withUnsafeBuffers<R>(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ d: Tensor,
                                  _ body: (SharedFloats, SharedFloats, SharedFloats, SharedFloats) -> R) -> R {
    a.scalars.withUnsafeBufferPointer { a in
        b.scalars.withUnsafeBufferPointer { b in
            c.scalars.withUnsafeBufferPointer { c in
                d.scalars.withUnsafeBufferPointer { d in
                    body(SharedFloats(a.baseAddress!), SharedFloats(b.baseAddress!), SharedFloats(c.baseAddress!),
                         SharedFloats(d.baseAddress!))
                }
            }
        }
    }
}
