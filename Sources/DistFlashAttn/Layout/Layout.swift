/// Which global token positions each of P ranks holds. Every kind works for any S ≥ 1 and P ≥ 1: nothing is padded,
/// chunk sizes differ by at most one token (the first S mod n chunks get the extra one), and when S < P (or S < 2P
/// for zigzag) some ranks hold no tokens.
///
/// ```
/// S = 8, P = 2          positions 0 1 2 3 4 5 6 7
/// contiguous            rank      0 0 0 0 1 1 1 1    rank r holds chunk r of P
/// zigzag                rank      0 0 1 1 1 1 0 0    rank r holds chunks r and 2P−1−r of 2P
/// striped               rank      0 1 0 1 0 1 0 1    token i lives on rank i mod P
/// ```
/// Zigzag and striped give every rank both early and late tokens, so a causal mask costs every rank about the same;
/// contiguous keeps each rank's positions one interval (simple position ids, the DistFlashAttn fold balances it).
/// A rank's local rows are its positions in increasing order.
public struct Layout: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case contiguous, zigzag, striped
    }

    public let kind: Kind
    /// S, the global sequence length.
    public let sequence: Int
    /// P, the number of ranks.
    public let ranks: Int

    public init(_ kind: Kind, sequence: Int, ranks: Int) throws {
        guard sequence >= 1 else {
            throw DistFlashError(.invalidProblem, "\(kind) layout: sequence S = \(sequence) must be ≥ 1")
        }
        guard ranks >= 1 else {
            throw DistFlashError(.invalidProblem, "\(kind) layout: ranks P = \(ranks) must be ≥ 1")
        }
        self.kind = kind
        self.sequence = sequence
        self.ranks = ranks
    }

    public var description: String { "\(kind) layout of S = \(sequence) over P = \(ranks)" }

    /// Number of tokens rank `rank` holds.
    public func count(rank: Int) -> Int {
        switch kind {
        case .contiguous: return chunkSize(rank)
        case .zigzag: return chunkSize(rank) + chunkSize(2 * ranks - 1 - rank)
        case .striped: return rank < sequence ? (sequence - 1 - rank) / ranks + 1 : 0
        }
    }

    /// The global positions rank `rank` holds, increasing; local row n is `positions(rank:)[n]`.
    public func positions(rank: Int) -> [Int] {
        precondition((0..<ranks).contains(rank), "rank \(rank) outside 0..<\(ranks)")
        switch kind {
        case .contiguous: return Array(chunk(rank))
        case .zigzag: return Array(chunk(rank)) + Array(chunk(2 * ranks - 1 - rank))
        case .striped: return Array(stride(from: rank, to: sequence, by: ranks))
        }
    }

    /// The rank holding global position `position` and its local row there.
    public func owner(of position: Int) -> (rank: Int, local: Int) {
        precondition((0..<sequence).contains(position), "position \(position) outside 0..<\(sequence)")
        switch kind {
        case .contiguous:
            let c = chunkIndex(containing: position)
            return (c, position - chunkStart(c))
        case .zigzag:
            let c = chunkIndex(containing: position)
            if c < ranks { return (c, position - chunkStart(c)) }
            let rank = 2 * ranks - 1 - c  // the second chunk follows the rank's first chunk in local order
            return (rank, chunkSize(rank) + position - chunkStart(c))
        case .striped:
            return (position % ranks, position / ranks)
        }
    }

    // MARK: Chunks (contiguous: P of them, zigzag: 2P)

    private var chunkCount: Int { kind == .zigzag ? 2 * ranks : ranks }

    /// Chunk c starts after c chunks of ⌊S/n⌋ tokens plus one extra token for each earlier chunk below S mod n.
    private func chunkStart(_ c: Int) -> Int {
        c * (sequence / chunkCount) + min(c, sequence % chunkCount)
    }

    private func chunk(_ c: Int) -> Range<Int> { chunkStart(c)..<chunkStart(c + 1) }

    private func chunkSize(_ c: Int) -> Int { chunkStart(c + 1) - chunkStart(c) }

    private func chunkIndex(containing position: Int) -> Int {
        let small = sequence / chunkCount, bigChunks = sequence % chunkCount
        let bigTokens = bigChunks * (small + 1)
        if position < bigTokens { return position / (small + 1) }
        return bigChunks + (position - bigTokens) / small  // small ≥ 1 here: otherwise every position is < bigTokens
    }
}
