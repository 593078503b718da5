/// Which keys a query may attend to, decided from *global* token positions, so that any shard of the sequence
/// (contiguous, zigzag, striped) applies the same mask.
///
/// For query position i and key position j (0-based, S tokens):
/// ```
/// causal      j ≤ i                          1 0 0 0
/// full        always                         1 1 0 0   ← causal, S = 4
/// window(W)   i − W < j ≤ i                  1 1 1 0
///                                            1 1 1 1
/// ```
/// With packed documents, a pair must also lie in the same document; the kind then applies inside it
/// (causal documents are the usual packed-sequence training mask).
public struct AttentionMask: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case causal
        case full
        /// Causal sliding window: query i sees keys i − W + 1 … i.
        case window(Int)
    }

    public let kind: Kind
    /// Lengths of the packed documents (they sum to S), or nil for one sequence.
    public let documentLengths: [Int]?
    /// Global position where each document starts (prefix sums of `documentLengths`).
    private let documentStarts: [Int]

    public init(_ kind: Kind, documentLengths: [Int]? = nil) {
        self.kind = kind
        self.documentLengths = documentLengths
        var starts: [Int] = []
        var next = 0
        for length in documentLengths ?? [] {
            starts.append(next)
            next += length
        }
        self.documentStarts = starts
    }

    public static let causal = AttentionMask(.causal)
    public static let full = AttentionMask(.full)
    public static func window(_ width: Int) -> AttentionMask { AttentionMask(.window(width)) }
    public static func documents(_ lengths: [Int], _ kind: Kind = .causal) -> AttentionMask {
        AttentionMask(kind, documentLengths: lengths)
    }

    /// Parses `causal`, `full` or `window=W`.
    public static func parseKind(_ text: String) throws -> Kind {
        switch text {
        case "causal": return .causal
        case "full": return .full
        default:
            if text.hasPrefix("window=") {
                let value = text.dropFirst("window=".count)
                guard let width = Int(value), width >= 1 else {
                    throw DistFlashError(.invalidProblem, "mask '\(text)': the window width must be an integer ≥ 1")
                }
                return .window(width)
            }
            throw DistFlashError(.invalidProblem, "mask '\(text)' is unknown: use causal, full or window=W")
        }
    }

    public var description: String {
        let base: String
        switch kind {
        case .causal: base = "causal"
        case .full: base = "full"
        case .window(let w): base = "window=\(w)"
        }
        guard let lengths = documentLengths else { return base }
        return base + " in \(lengths.count) document\(lengths.count == 1 ? "" : "s")"
    }

    /// Whether the mask is causal in position (keys after the query are never visible).
    public var isCausal: Bool { kind != .full }

    // MARK: Document lookup

    public var hasDocuments: Bool { documentLengths != nil }

    /// Index of the document holding global position `position` (0 without documents).
    public func documentIndex(of position: Int) -> Int {
        var low = 0, high = documentStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if documentStarts[mid] <= position { low = mid } else { high = mid - 1 }
        }
        return max(low, 0)
    }

    /// Document index of every position (all 0 without documents).
    public func documentIndices(of positions: [Int]) -> [Int32] {
        guard hasDocuments else { return [Int32](repeating: 0, count: positions.count) }
        return positions.map { Int32(documentIndex(of: $0)) }
    }

    // MARK: Visibility

    /// Whether query position `query` (in document `queryDocument`) may see key `key` (in `keyDocument`).
    @inline(__always)
    public func allows(query: Int, key: Int, queryDocument: Int32 = 0, keyDocument: Int32 = 0) -> Bool {
        guard queryDocument == keyDocument else { return false }
        switch kind {
        case .causal: return key <= query
        case .full: return true
        case .window(let w): return key <= query && key > query - w
        }
    }

    /// Whether query `query` sees key `key`, looking documents up (slow path for references and verifiers).
    public func allows(query: Int, key: Int) -> Bool {
        allows(query: query, key: key,
               queryDocument: Int32(hasDocuments ? documentIndex(of: query) : 0),
               keyDocument: Int32(hasDocuments ? documentIndex(of: key) : 0))
    }

    public enum Visibility: Sendable, Equatable {
        /// No pair in the block is visible: skip it.
        case none
        /// Some pairs are visible: apply the mask per element.
        case partial
        /// Every pair is visible: no per-element mask needed.
        case all
    }

    /// Classifies a block of pairs from bounds on its positions and documents. Sound for any positions inside
    /// the bounds: `.none` and `.all` hold for every pair, otherwise `.partial`.
    public func visibility(queries: ClosedRange<Int>, keys: ClosedRange<Int>,
                           queryDocuments: ClosedRange<Int32> = 0...0,
                           keyDocuments: ClosedRange<Int32> = 0...0) -> Visibility {
        if !queryDocuments.overlaps(keyDocuments) { return .none }
        let oneDocument = queryDocuments.lowerBound == queryDocuments.upperBound && queryDocuments == keyDocuments
        switch kind {
        case .full:
            return oneDocument ? .all : .partial
        case .causal:
            if keys.lowerBound > queries.upperBound { return .none }
            return oneDocument && keys.upperBound <= queries.lowerBound ? .all : .partial
        case .window(let w):
            if keys.lowerBound > queries.upperBound || keys.upperBound <= queries.lowerBound - w { return .none }
            let allInWindow = keys.upperBound <= queries.lowerBound && keys.lowerBound > queries.upperBound - w
            return oneDocument && allInWindow ? .all : .partial
        }
    }
}
