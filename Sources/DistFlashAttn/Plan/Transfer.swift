extension Plan {
    /// Data of one shard region moving from one rank to another: local rows `rows` of shard `shard` (the rank that
    /// owns those tokens), for query heads `heads`. K/V and dK/dV carry only the key/value heads those query heads
    /// read (`heads / (H / H_kv)`), so under GQA they are H_kv-sized, never expanded.
    ///
    /// An all-to-all (Ulysses) or all-gather is the set of point-to-point transfers of one step.
    public struct Transfer: Sendable, Equatable, CustomStringConvertible {
        public enum Content: String, Sendable, CaseIterable {
            /// K and V of the shard's tokens (an input).
            case keyValue = "K/V"
            /// Q of the shard's rows (forward input of a helper).
            case query = "Q"
            /// Q, O, dO and LSE of the shard's rows (backward inputs of a helper).
            case backwardInputs = "Q/O/dO/LSE"
            /// A partial `(O, LSE)` of the shard's query rows, merged by the owner (forward result).
            case partialOutput = "partial (O, LSE)"
            /// A dQ partial, added by the owner (backward result).
            case queryGradient = "dQ partial"
            /// dK and dV partials, added by the owner (backward result).
            case keyValueGradient = "dK/dV partial"

            /// Results travel back to the shard's owner; inputs travel to whoever computes with them.
            public var isResult: Bool {
                switch self {
                case .keyValue, .query, .backwardInputs: return false
                case .partialOutput, .queryGradient, .keyValueGradient: return true
                }
            }

            /// The precision of each tensor it carries: inputs (Q, K, V, dO) in the problem's input type,
            /// O, LSE and every result as fp32 accumulators.
            public var payloadPrecisions: [BlockPrecision] {
                switch self {
                case .keyValue: return [.input, .input]
                case .query: return [.input]
                case .backwardInputs: return [.input, .accumulator, .input, .accumulator]
                case .partialOutput: return [.accumulator, .accumulator]
                case .queryGradient: return [.accumulator]
                case .keyValueGradient: return [.accumulator, .accumulator]
                }
            }

            /// Whether the content belongs to the pass.
            public func occurs(in pass: Pass) -> Bool {
                switch self {
                case .keyValue: return true
                case .query, .partialOutput: return pass == .forward
                case .backwardInputs, .queryGradient, .keyValueGradient: return pass == .backward
                }
            }
        }

        public var content: Content
        /// The rank that owns the tokens the data belongs to.
        public var shard: Int
        /// Local rows of that shard (all of them for K/V and dK/dV).
        public var rows: Range<Int>
        /// Query heads (K/V contents carry the key/value heads these read).
        public var heads: Range<Int>
        public var from: Int
        public var to: Int
        /// The step at whose start it is sent; it arrives by the end of that step.
        public var postedAt: Int
        /// The first step whose tasks (or onward sends) use it; for results `postedAt + 1`, the merge on arrival.
        public var consumedAt: Int

        public init(content: Content, shard: Int, rows: Range<Int>, heads: Range<Int>, from: Int, to: Int,
                    postedAt: Int, consumedAt: Int) {
            self.content = content
            self.shard = shard
            self.rows = rows
            self.heads = heads
            self.from = from
            self.to = to
            self.postedAt = postedAt
            self.consumedAt = consumedAt
        }

        public var description: String {
            "\(content.rawValue) of shard \(shard) rows \(rows.lowerBound)..<\(rows.upperBound) "
                + "heads \(heads.lowerBound)..<\(heads.upperBound), \(from) → \(to), "
                + "posted at step \(postedAt), consumed at step \(consumedAt)"
        }

        /// Bytes on the wire per transfer. Q, K, V travel in the problem's dtype; O, dO, LSE, partials and gradients
        /// in float32 (the library keeps outputs and accumulators in float32):
        /// ```
        /// K/V            2 · B · rows · kvHeads · D · size(dtype)
        /// Q              B · rows · heads · D · size(dtype)
        /// Q/O/dO/LSE     B · rows · heads · (D · size(dtype) + 2 · D · 4 + 4)
        /// (O, LSE)       B · rows · heads · (D + 1) · 4
        /// dQ             B · rows · heads · D · 4
        /// dK/dV          2 · B · rows · kvHeads · D · 4
        /// ```
        /// Shapes of the tensors the transfer carries: K, V `[B, rows, H_kv serving heads, D]`; Q `[B, rows, heads,
        /// D]`; backward inputs Q, O, dO `[B, rows, heads, D]` + LSE `[B, heads, rows]`; a partial O + LSE; dQ; dK, dV.
        public func payloadShapes(problem: AttentionProblem) -> [[Int]] {
            let (b, d) = (problem.batch, problem.headDim)
            let queryShape = [b, rows.count, heads.count, d]
            let keyShape = [b, rows.count, problem.keyValueHeads(serving: heads).count, d]
            let statsShape = [b, heads.count, rows.count]
            switch content {
            case .keyValue, .keyValueGradient: return [keyShape, keyShape]
            case .query, .queryGradient: return [queryShape]
            case .backwardInputs: return [queryShape, queryShape, queryShape, statsShape]
            case .partialOutput: return [queryShape, statsShape]
            }
        }

        public func bytes(problem: AttentionProblem) -> Int {
            let input = problem.dtype.inputBytes
            let d = problem.headDim
            let queryRows = problem.batch * rows.count * heads.count
            let keyRows = problem.batch * rows.count * problem.keyValueHeads(serving: heads).count
            switch content {
            case .keyValue: return 2 * keyRows * d * input
            case .query: return queryRows * d * input
            case .backwardInputs: return queryRows * (2 * d * input + d * 4 + 4)
            case .partialOutput: return queryRows * (d + 1) * 4
            case .queryGradient: return queryRows * d * 4
            case .keyValueGradient: return 2 * keyRows * d * 4
            }
        }
    }
}
