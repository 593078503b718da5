/// A dense tensor a backend computes on, wherever it lives: `Tensor` in host memory, device memory on a GPU.
public protocol ShapedBlock: Sendable {
    var shape: [Int] { get }
    /// Bytes it occupies (and a transfer of it moves).
    var byteCount: Int { get }
}

extension Tensor: ShapedBlock {
    public var byteCount: Int { count * MemoryLayout<Float>.size }
}

/// What the executor runs a plan with: the attention block primitives plus the few tensor operations it needs
/// to cut and paste shards, on the backend's own `Block` type, so a GPU keeps every shard on the device from the
/// first step to the last. Shapes use fixed letters: B batch, S_q / S_k rows of the query / key block, H query
/// heads, H_kv key/value heads, D head dimension.
///
/// Blocks come in two precisions: inputs (Q, K, V, dO) in the problem's input type, and fp32 accumulators
/// (O, LSE, δ, gradients). Slices keep their source's precision.
public protocol BlockBackend: Sendable {
    associatedtype Block: ShapedBlock

    /// A new block of `shape` with every element `value`: an accumulator, or of `prototype`'s precision.
    func filled(_ shape: [Int], with value: Float, like prototype: Block?) throws -> Block
    /// The sub-block at `ranges` (one range per axis) as a new dense block.
    func slice(_ block: Block, _ ranges: [Range<Int>]) throws -> Block
    /// `block[ranges] = values`
    func write(_ values: Block, into block: inout Block, at ranges: [Range<Int>]) throws
    /// `block[ranges] += values` (accumulators)
    func add(_ values: Block, into block: inout Block, at ranges: [Range<Int>]) throws

    /// Folds the block (query `[B, S_q, H, D]` at `queryPositions`) × (key, value `[B, S_k, H_kv, D]` at
    /// `keyPositions`) into the partial O `[B, S_q, H, D]`, LSE `[B, H, S_q]`.
    func forward(query: Block, queryPositions: [Int], key: Block, value: Block, keyPositions: [Int],
                 mask: AttentionMask, scale: Float, output: inout Block, logSumExp: inout Block) throws
    /// `(output, logSumExp) ⊕= (otherOutput, otherLogSumExp)`: partials of the same rows over disjoint keys.
    func merge(output: inout Block, logSumExp: inout Block, otherOutput: Block, otherLogSumExp: Block) throws
    /// δ = rowsum(dO ∘ O): output, outputGrad `[B, S, H, D]` → `[B, H, S]`.
    func backwardPreprocess(output: Block, outputGrad: Block) throws -> Block
    /// Adds the block's dQ `[B, S_q, H, D]` and dK, dV `[B, S_k, H_kv, D]`, given the final LSE and δ.
    func backward(query: Block, queryPositions: [Int], key: Block, value: Block, keyPositions: [Int],
                  mask: AttentionMask, scale: Float, outputGrad: Block, logSumExp: Block, delta: Block,
                  queryGrad: inout Block, keyGrad: inout Block, valueGrad: inout Block) throws

    /// Waits until every queued primitive has run. Returns the seconds the device spent in primitives since the
    /// last call when it measures them itself (asynchronous devices), nil when the caller's clock is right.
    func finish() throws -> Double?
}

/// A transfer's tensor either holds inputs (in the problem's input precision) or fp32 accumulators.
public enum BlockPrecision: Sendable, Equatable {
    case input, accumulator
}
