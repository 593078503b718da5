import DistFlashAttn

/// The shape of a LLaMA-style decoder: token embedding, `layers` pre-norm blocks of grouped-query attention with
/// rotary positions and a SwiGLU MLP, a final RMSNorm and an untied output projection.
///
/// Letters used throughout: V vocabulary, E model dimension, H query heads, H_kv key/value heads, D head
/// dimension (E = H·D), F MLP hidden dimension.
public struct ModelConfig: Sendable, Equatable, CustomStringConvertible {
    /// V
    public var vocab: Int
    /// E
    public var dim: Int
    public var layers: Int
    /// H
    public var heads: Int
    /// H_kv; each serves H / H_kv query heads.
    public var kvHeads: Int
    /// D
    public var headDim: Int
    /// F
    public var ffnDim: Int
    /// Base θ of the rotary frequencies θ^(−2i/D).
    public var ropeTheta: Double
    /// ε inside the RMSNorm square root.
    public var normEps: Float

    public init(vocab: Int, dim: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, ffnDim: Int,
                ropeTheta: Double = 10_000, normEps: Float = 1e-5) throws {
        (self.vocab, self.dim, self.layers, self.heads, self.kvHeads, self.headDim, self.ffnDim) =
            (vocab, dim, layers, heads, kvHeads, headDim, ffnDim)
        (self.ropeTheta, self.normEps) = (ropeTheta, normEps)
        try validate()
    }

    public func validate() throws {
        func fail(_ message: String) -> DistFlashError { DistFlashError(.invalidProblem, message) }
        guard vocab >= 1 else { throw fail("vocab V = \(vocab): must be ≥ 1") }
        guard layers >= 1 else { throw fail("layers = \(layers): must be ≥ 1") }
        guard heads >= 1 else { throw fail("heads H = \(heads): must be ≥ 1") }
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw fail("kv-heads H_kv = \(kvHeads) with heads H = \(heads): H_kv must be ≥ 1 and divide H, "
                + "so each key/value head serves a whole group of query heads")
        }
        guard headDim >= 2, headDim % 2 == 0, headDim <= AttentionProblem.maxHeadDim else {
            throw fail("head-dim D = \(headDim): must be even (rotary embeddings rotate pairs) and in "
                + "2…\(AttentionProblem.maxHeadDim)")
        }
        guard dim == heads * headDim else {
            throw fail("dim E = \(dim) with heads H = \(heads) and head-dim D = \(headDim): E must equal H·D = "
                + "\(heads * headDim)")
        }
        guard ffnDim >= 1 else { throw fail("ffn-dim F = \(ffnDim): must be ≥ 1") }
        guard ropeTheta.isFinite, ropeTheta > 1 else { throw fail("rope-theta = \(ropeTheta): must be finite and > 1") }
        guard normEps.isFinite, normEps > 0 else { throw fail("norm-eps = \(normEps): must be finite and > 0") }
    }

    /// Query heads per key/value head.
    public var group: Int { heads / kvHeads }

    public var description: String {
        "V=\(vocab) E=\(dim) layers=\(layers) H=\(heads) H_kv=\(kvHeads) D=\(headDim) F=\(ffnDim) "
            + "(\(ModelConfig.formatCount(parameterCount)) parameters)"
    }

    static func formatCount(_ count: Int) -> String {
        switch count {
        case 1_000_000_000...: return "\(Double(count / 10_000_000) / 100)B"
        case 1_000_000...: return "\(Double(count / 10_000) / 100)M"
        case 1_000...: return "\(Double(count / 10) / 100)K"
        default: return "\(count)"
        }
    }
}

// MARK: Presets

extension ModelConfig {
    /// Names accepted by `preset(_:vocab:)`.
    public static let presetNames = ["tiny", "small", "llama-125m", "llama-1b"]

    /// 2 layers, E = 128 (H = 4, H_kv = 2, D = 32), F = 384: trains on two CPU cores at S ≈ 1–2k tokens in a few
    /// minutes. `vocab` is the task's (e.g. a small synthetic recall vocabulary).
    public static func tiny(vocab: Int) throws -> ModelConfig {
        try ModelConfig(vocab: vocab, dim: 128, layers: 2, heads: 4, kvHeads: 2, headDim: 32, ffnDim: 384)
    }

    /// 4 layers, E = 256 (H = 8, H_kv = 4, D = 32), F = 768.
    public static func small(vocab: Int) throws -> ModelConfig {
        try ModelConfig(vocab: vocab, dim: 256, layers: 4, heads: 8, kvHeads: 4, headDim: 32, ffnDim: 768)
    }

    /// GPT-2-small-sized LLaMA: 12 layers, E = 768 (H = 12, H_kv = 4, D = 64), F = 2048, V = 32000 (≈ 125M).
    public static func llama125m(vocab: Int = 32_000) throws -> ModelConfig {
        try ModelConfig(vocab: vocab, dim: 768, layers: 12, heads: 12, kvHeads: 4, headDim: 64, ffnDim: 2048)
    }

    /// LLaMA-3.2-1B-class: 16 layers, E = 2048 (H = 32, H_kv = 8, D = 64), F = 8192, V = 32000, θ = 500000
    /// (≈ 1.1B).
    public static func llama1b(vocab: Int = 32_000) throws -> ModelConfig {
        try ModelConfig(vocab: vocab, dim: 2048, layers: 16, heads: 32, kvHeads: 8, headDim: 64, ffnDim: 8192,
                        ropeTheta: 500_000)
    }

    /// The preset called `name` (see `presetNames`). `vocab` is required by `tiny` and `small`, optional for the
    /// LLaMA presets (default 32000).
    public static func preset(_ name: String, vocab: Int? = nil) throws -> ModelConfig {
        func taskVocab() throws -> Int {
            guard let vocab else {
                throw DistFlashError(.invalidProblem, "model '\(name)' needs the task's vocabulary size V")
            }
            return vocab
        }
        switch name {
        case "tiny": return try tiny(vocab: taskVocab())
        case "small": return try small(vocab: taskVocab())
        case "llama-125m": return try llama125m(vocab: vocab ?? 32_000)
        case "llama-1b": return try llama1b(vocab: vocab ?? 32_000)
        default:
            throw DistFlashError(.invalidProblem,
                                 "model '\(name)' is unknown: use one of \(presetNames.joined(separator: ", "))")
        }
    }
}
