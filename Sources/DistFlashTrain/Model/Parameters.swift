import DistFlashAttn

/// The model's trainable tensors by name, in a fixed order. Names and layouts follow Hugging Face LLaMA
/// (`model.layers.0.self_attn.q_proj.weight`, linear weights `[out, in]`), so a checkpoint loads in PyTorch as is.
public struct Parameters: Sendable, Equatable {
    public private(set) var names: [String]
    public var tensors: [Tensor]
    private var index: [String: Int]

    public init(_ entries: [(name: String, tensor: Tensor)]) {
        names = entries.map(\.name)
        tensors = entries.map(\.tensor)
        index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
    }

    public var count: Int { names.count }
    /// Total number of scalars.
    public var scalarCount: Int { tensors.reduce(0) { $0 + $1.count } }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public subscript(name: String) -> Tensor {
        get { tensors[index[name]!] }
        set { tensors[index[name]!] = newValue }
    }

    /// Same names and shapes, every value zero (gradient accumulators, optimizer moments).
    public func zeros() -> Parameters {
        Parameters(names.indices.map { (names[$0], Tensor(shape: tensors[$0].shape)) })
    }
}

/// One batch of token ids with their next-token labels. Tokens and labels `[B, S]`; label −1 means "no loss here".
/// Labels are shifted before sharding, so the label of a shard's last token travels with it.
public struct TokenBatch: Sendable, Equatable {
    public var batch: Int
    public var sequence: Int
    public var tokens: [Int32]
    public var labels: [Int32]

    public init(batch: Int, sequence: Int, tokens: [Int32], labels: [Int32]) {
        precondition(tokens.count == batch * sequence && labels.count == tokens.count, "TokenBatch: [B, S] mismatch")
        (self.batch, self.sequence, self.tokens, self.labels) = (batch, sequence, tokens, labels)
    }

    /// Number of tokens that carry a label.
    public var labeledCount: Int { labels.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    /// Every row's tokens and labels at `positions` `[n]`: a rank's shard `[B, n]` (labels were shifted before
    /// sharding, so the label of a shard's last token travels with it).
    public func columns(_ positions: [Int]) -> TokenBatch {
        var tokens: [Int32] = [], labels: [Int32] = []
        tokens.reserveCapacity(batch * positions.count)
        labels.reserveCapacity(batch * positions.count)
        for b in 0..<batch {
            for p in positions {
                tokens.append(self.tokens[b * sequence + p])
                labels.append(self.labels[b * sequence + p])
            }
        }
        return TokenBatch(batch: batch, sequence: positions.count, tokens: tokens, labels: labels)
    }
}
