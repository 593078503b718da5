import DistFlashAttn
import _CPUKernels

/// Key-side GEMM operands packed once per call and shared read-only by every query tile:
/// one packed operand per (batch b, kv head g, key tile t).
final class PackedTiles: @unchecked Sendable {
    // Invariant: written only inside `init` (each task packs its own slot), read-only afterwards.
    enum Form {
        /// Kᵀ or Vᵀ as the B operand of `X · Kᵀ`: D × cols.
        case transposed
        /// K or V as the B operand of `P · V`: cols × D.
        case rows
    }

    private let storage: UnsafeMutablePointer<Float>
    private let slot: Int
    private let tiles: Int
    private let kvHeads: Int

    /// Packs `tensor` `[B, S_k, H_kv, D]` tile by tile in `form`.
    init(_ tensor: Tensor, keys: TiledTokens, form: Form, workers: Int, isa: Int32) {
        let (batch, kvHeads, dim) = (tensor.shape[0], tensor.shape[2], tensor.shape[3])
        let sequence = tensor.shape[1]
        let tileSize = keys.tileSize
        self.tiles = keys.tileCount
        self.kvHeads = kvHeads
        switch form {
        case .transposed: slot = dfa_packed_b_floats(isa, Int32(dim), Int32(tileSize))
        case .rows: slot = dfa_packed_b_floats(isa, Int32(tileSize), Int32(dim))
        }
        let total = max(1, batch * kvHeads * tiles * slot)
        storage = .allocate(capacity: total)
        let out = SharedFloats(storage)
        let (tiles, slot) = (self.tiles, self.slot)
        tensor.scalars.withUnsafeBufferPointer { src in
            let src = SharedFloats(src.baseAddress!)
            parallelFor(count: batch * kvHeads * tiles, workers: workers) { task, _ in
                let t = task % tiles, g = (task / tiles) % kvHeads, b = task / (tiles * kvHeads)
                let rows = keys.rows(t)
                let base = src.base + ((b * sequence + rows.lowerBound) * kvHeads + g) * dim
                let ld = kvHeads * dim
                let dst = out.base + task * slot
                switch form {
                case .transposed: dfa_pack_b(isa, Int32(dim), Int32(rows.count), base, 1, ld, dst)
                case .rows: dfa_pack_b(isa, Int32(rows.count), Int32(dim), base, ld, 1, dst)
                }
            }
        }
    }

    deinit { storage.deallocate() }

    func tile(batch b: Int, kvHead g: Int, tile t: Int) -> UnsafePointer<Float> {
        UnsafePointer(storage + ((b * kvHeads + g) * tiles + t) * slot)
    }
}
