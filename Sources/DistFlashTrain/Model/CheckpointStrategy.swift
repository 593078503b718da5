/// What the forward pass keeps for the backward pass, per decoder layer, and so what the backward recomputes.
///
/// ```
///            kept per layer               backward recomputes                     attention forwards / step
/// none       every activation             nothing                                 1 × layers
/// layer      the layer input x            the whole layer, attention included      2 × layers
/// remat      x, attention O and LSE       RMSNorm → Q, K, V → RoPE, and o_proj →   1 × layers
///                                         residual → RMSNorm → MLP from the saved O
/// ```
/// `remat` is the DistFlashAttn placement: the checkpoint sits *after* the attention, so the backward has O and
/// LSE (what the attention backward needs besides Q, K, V) without running the — distributed, most expensive —
/// attention forward again; only the cheap projections around it are recomputed.
public enum CheckpointStrategy: String, Sendable, CaseIterable, CustomStringConvertible {
    case none
    case layer
    case remat

    public var description: String { rawValue }
}
