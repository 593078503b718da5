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
    /// Per tile pair, computed transposed (keys × queries) so every GEMM reads a plain row-major A operand:
    /// ```
    /// Pᵀ = exp(scale·K·Qᵀ − LSE)   dPᵀ = V·dOᵀ   dSᵀ = Pᵀ ∘ (dPᵀ − δ)
    /// dV += Pᵀ·dO   dK += scale·dSᵀ·Q   dQᵀ += scale·Kᵀ·dSᵀ
    /// ```
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
        let owners = geo.batch * geo.kvHeads
        let chunks = owners >= workers ? 1 : min(keys.tileCount, (2 * workers + owners - 1) / owners)
        var dqScratch = [Float](repeating: 0, count: (chunks - 1) * query.count)

        let (br, bc, dim) = (queryTile, keyTile, geo.dim)
        let queryTiles = queries.tileCount
        // Per query tile: Qᵀ and dOᵀ packed as B (D × br), Q and dO packed as B (br × D), dQᵀ accumulator (D × br).
        let packedT = dfa_packed_b_floats(isa, Int32(dim), Int32(br))
        let packedRows = dfa_packed_b_floats(isa, Int32(br), Int32(dim))
        let perQueryTile = 2 * packedT + 2 * packedRows + dim * br
        // Per key tile: K, V rows and Kᵀ (row-major), Sᵀ and dPᵀ, dSᵀ packed as B.
        let perKeyTile = 3 * bc * dim + 2 * bc * br + dfa_packed_b_floats(isa, Int32(bc), Int32(br))
        // dK and dV of every key row, accumulated over the group's heads in contiguous rows (the tensors' row
        // stride H_kv·D is often a multiple of 4 KiB, which would alias the rows in L1), added to grads at the end.
        let keyGradients = 2 * geo.keys * dim
        let scratch = WorkerScratch(workers: workers, floats: queryTiles * perQueryTile + perKeyTile + keyGradients)

        withUnsafeBuffers(query, outputGrad, key, value) { q, dO, k, v in
        withUnsafeBuffers(logSumExp, delta) { lse, dlt in
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
                                let keySide = ws + queryTiles * perQueryTile
                                let (kTile, vTile, kT) = (keySide, keySide + bc * dim, keySide + 2 * bc * dim)
                                let (st, dpt) = (kT + bc * dim, kT + bc * dim + bc * br)
                                let dsPacked = dpt + bc * br
                                let dkAcc = keySide + perKeyTile, dvAcc = dkAcc + geo.keys * dim
                                let ldq = geo.heads * dim, ldk = geo.kvHeads * dim
                                let d = Int32(dim)
                                let ownTiles = stride(from: chunk, to: keys.tileCount, by: chunks)
                                for kt in ownTiles {
                                    let cols = keys.rows(kt)
                                    (dkAcc + cols.lowerBound * dim).update(repeating: 0, count: cols.count * dim)
                                    (dvAcc + cols.lowerBound * dim).update(repeating: 0, count: cols.count * dim)
                                }

                                for h in g * geo.group..<(g + 1) * geo.group {
                                    // Query-side operands of this head, packed once for all key tiles.
                                    for qt in 0..<queryTiles {
                                        let rows = queries.rows(qt)
                                        let offset = ((b * geo.queries + rows.lowerBound) * geo.heads + h) * dim
                                        let slot = ws + qt * perQueryTile, m = Int32(rows.count)
                                        dfa_pack_b(isa, d, m, q.base + offset, 1, ldq, slot)
                                        dfa_pack_b(isa, d, m, dO.base + offset, 1, ldq, slot + packedT)
                                        dfa_pack_b(isa, m, d, q.base + offset, ldq, 1, slot + 2 * packedT)
                                        dfa_pack_b(isa, m, d, dO.base + offset, ldq, 1, slot + 2 * packedT + packedRows)
                                        (slot + 2 * packedT + 2 * packedRows).update(repeating: 0, count: dim * br)
                                    }
                                    for kt in ownTiles {
                                        let cols = keys.rows(kt)
                                        let kvOffset = ((b * geo.keys + cols.lowerBound) * geo.kvHeads + g) * dim
                                        for j in 0..<cols.count {
                                            (kTile + j * dim).update(from: k.base + kvOffset + j * ldk, count: dim)
                                            (vTile + j * dim).update(from: v.base + kvOffset + j * ldk, count: dim)
                                            for e in 0..<dim { kT[e * bc + j] = kTile[j * dim + e] }
                                        }
                                        for qt in 0..<queryTiles {
                                            let visibility = mask.visibility(queries, qt, keys, kt)
                                            if visibility == .none { continue }
                                            let rows = queries.rows(qt)
                                            let m = Int32(rows.count)
                                            let slot = ws + qt * perQueryTile
                                            let (qT, dOT) = (slot, slot + packedT)
                                            let (qRows, dORows) = (slot + 2 * packedT, slot + 2 * packedT + packedRows)
                                            let dqT = slot + 2 * packedT + 2 * packedRows
                                            let stat = (b * geo.heads + h) * geo.queries + rows.lowerBound

                                            // Key rows k0..<k1 of the tile can be visible to this query tile.
                                            var (k0, k1) = (0, cols.count)
                                            if visibility == .partial {
                                                let run = mask.visibleKeys(queries, qt, keys, kt)
                                                if run.isEmpty { continue }
                                                (k0, k1) = (run.lowerBound, run.upperBound)
                                            }
                                            let n = Int32(k1 - k0)
                                            dfa_gemm(isa, n, m, d, scale, kTile + k0 * dim, dim, qT, d, 0, st, br)
                                            if visibility == .partial {
                                                mask.applyTransposed(to: st, ld: br, queries, qt, keys, kt, rows: k0..<k1)
                                            }
                                            dfa_gemm(isa, n, m, d, 1, vTile + k0 * dim, dim, dOT, d, 0, dpt, br)
                                            dfa_softmax_backward_t(isa, n, m, st, br, dpt, br, lse.base + stat, dlt.base + stat)
                                            let tileRow = (cols.lowerBound + k0) * dim
                                            dfa_gemm(isa, n, d, m, 1, st, br, dORows, m, 1, dvAcc + tileRow, dim)
                                            dfa_gemm(isa, n, d, m, scale, dpt, br, qRows, m, 1, dkAcc + tileRow, dim)
                                            dfa_pack_b(isa, n, m, dpt, br, 1, dsPacked)
                                            dfa_gemm(isa, d, m, n, scale, kT + k0, bc, dsPacked, n, 1, dqT, br)
                                        }
                                    }
                                    // dQ rows of this head += dQᵀ.
                                    for qt in 0..<queryTiles {
                                        let rows = queries.rows(qt)
                                        let dqT = ws + qt * perQueryTile + 2 * packedT + 2 * packedRows
                                        for (r, i) in rows.enumerated() {
                                            let row = dqOut + ((b * geo.queries + i) * geo.heads + h) * dim
                                            for e in 0..<dim { row[e] += dqT[e * br + r] }
                                        }
                                    }
                                }
                                for kt in ownTiles {
                                    for j in keys.rows(kt) {
                                        let offset = ((b * geo.keys + j) * geo.kvHeads + g) * dim
                                        for e in 0..<dim {
                                            dk.base[offset + e] += dkAcc[j * dim + e]
                                            dv.base[offset + e] += dvAcc[j * dim + e]
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
}

/// Read-only base pointers of two tensors for the duration of `body`.
private func withUnsafeBuffers<R>(_ a: Tensor, _ b: Tensor, _ body: (SharedFloats, SharedFloats) -> R) -> R {
    a.scalars.withUnsafeBufferPointer { a in
        b.scalars.withUnsafeBufferPointer { b in body(SharedFloats(a.baseAddress!), SharedFloats(b.baseAddress!)) }
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
