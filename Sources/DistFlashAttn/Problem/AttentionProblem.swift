/// Everything that defines one attention computation, validated once.
///
/// Tensors are row-major: Q, O, dO, dQ `[B, S, H, D]`; K, V, dK, dV `[B, S, H_kv, D]`; LSE `[B, H, S]`.
/// Grouped-query attention: query head h reads key/value head h / (H / H_kv).
public struct AttentionProblem: Sendable, Equatable {
    public enum DType: String, Sendable, CaseIterable {
        /// float32 inputs.
        case fp32
        /// bfloat16 inputs (rounded to nearest even); compute and outputs stay float32.
        case bf16
        /// IEEE half-precision inputs (rounded to nearest even; beyond ±65504 they overflow to ±∞); compute and
        /// outputs stay float32.
        case fp16

        /// Bytes an input element takes.
        public var inputBytes: Int { self == .fp32 ? 4 : 2 }

        /// `value` as an input of this type holds it.
        public func round(_ value: Float) -> Float {
            switch self {
            case .fp32: value
            case .bf16: BFloat16.round(value)
            case .fp16: Float(Float16(value))
            }
        }
    }

    public var batch: Int
    public var sequence: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var scale: Float
    public var mask: AttentionMask
    public var dtype: DType

    /// Builds and validates a problem. `scale` defaults to 1/√D.
    public init(batch: Int = 1, sequence: Int, heads: Int, kvHeads: Int? = nil, headDim: Int,
                scale: Float? = nil, mask: AttentionMask = .causal, dtype: DType = .fp32) throws {
        self.batch = batch
        self.sequence = sequence
        self.heads = heads
        self.kvHeads = kvHeads ?? heads
        self.headDim = headDim
        self.scale = scale ?? (headDim > 0 ? 1 / Float(headDim).squareRoot() : 1)
        self.mask = mask
        self.dtype = dtype
        try validate()
    }

    public static let maxHeadDim = 256

    public func validate() throws {
        func fail(_ message: String) -> DistFlashError { DistFlashError(.invalidProblem, message) }
        guard batch >= 1 else { throw fail("batch B = \(batch): must be ≥ 1") }
        guard sequence >= 1 else { throw fail("sequence S = \(sequence): must be ≥ 1") }
        guard heads >= 1 else { throw fail("heads H = \(heads): must be ≥ 1") }
        guard kvHeads >= 1 else { throw fail("kv-heads H_kv = \(kvHeads): must be ≥ 1") }
        guard heads % kvHeads == 0 else {
            throw fail("heads H = \(heads) is not divisible by kv-heads H_kv = \(kvHeads): "
                + "each key/value head must serve a whole group of query heads")
        }
        guard (1...Self.maxHeadDim).contains(headDim) else {
            throw fail("head-dim D = \(headDim): must be in 1…\(Self.maxHeadDim)")
        }
        guard scale.isFinite, scale != 0 else { throw fail("scale = \(scale): must be finite and non-zero") }
        if case .window(let w) = mask.kind, w < 1 { throw fail("window W = \(w): must be ≥ 1") }
        if let lengths = mask.documentLengths {
            guard !lengths.isEmpty else { throw fail("doc-lens is empty: give at least one document length") }
            if let bad = lengths.firstIndex(where: { $0 < 1 }) {
                throw fail("doc-lens[\(bad)] = \(lengths[bad]): every document length must be ≥ 1")
            }
            let total = lengths.reduce(0, +)
            guard total == sequence else {
                throw fail("doc-lens sum to \(total) but the sequence S = \(sequence): they must sum to S")
            }
        }
    }

    public var group: Int { heads / kvHeads }
    public var queryShape: [Int] { [batch, sequence, heads, headDim] }
    public var keyValueShape: [Int] { [batch, sequence, kvHeads, headDim] }
    public var logSumExpShape: [Int] { [batch, heads, sequence] }

    /// Number of (query, key) pairs the mask lets through, per batch element and head.
    public var visiblePairs: Int {
        let segments = mask.documentLengths ?? [sequence]
        return segments.reduce(0) { total, n in
            switch mask.kind {
            case .full: return total + n * n
            case .causal: return total + n * (n + 1) / 2
            case .window(let w):
                let k = min(w, n)  // first k rows see 1…k keys, the rest see k
                return total + k * (k + 1) / 2 + (n - k) * k
            }
        }
    }

    /// FLOPs of the forward pass counting only visible pairs: 4·B·H·D per pair (two GEMMs).
    /// For causal this is 4·B·S²·H·D / 2 up to the diagonal. Backward is 2.5×, forward+backward 3.5×.
    public var forwardFLOPs: Double { 4 * Double(batch) * Double(heads) * Double(headDim) * Double(visiblePairs) }
}
