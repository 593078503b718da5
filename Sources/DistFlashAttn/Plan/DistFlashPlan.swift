extension Plan {
    /// DistFlashAttn's load-balanced fold, generalised to every P ≥ 1 (contiguous layout). Block (q_i, kv_j) has
    /// offset δ = i − j; a causal-kind mask (causal, window, causal documents) needs only δ ≥ 0.
    /// ```
    /// step 0                 rank i computes (q_i, kv_i)                      the diagonal
    /// step t = 1 … ⌊P/2⌋     rank i ≥ t computes (q_i, kv_{i−t})              offset t, by the query owner
    ///                        rank k < t computes (q_{k+P−t}, kv_k)            offset P − t, by the K/V owner
    ///                                                                         ("helper"), partial (O, LSE) back
    /// even P, t = P/2        offsets t and P − t coincide: each block (q_i, kv_{i−t}) is split by query rows
    ///                        (equal visible pairs) between owner i and the otherwise idle rank i − t
    /// ```
    /// Every block with δ ≥ 0 is computed exactly once, each rank computes at most one block per step, and the
    /// makespan is P/2 blocks (ideal; a plain ring needs P − ½). Inputs are sent the step before use (K/V of j to
    /// rank j + t, Q of i to its helper); the last round's helper partials return in a final send-only step.
    /// Backward places tasks the same way: K/V go forward, Q/O/dO/LSE go to helpers, dQ partials return to query
    /// owners and dK/dV partials to K/V owners.
    ///
    /// Blocks without visible pairs (windows, documents) are never scheduled. A `full`-kind mask needs all P²
    /// blocks, which a plain ring already balances, so it is scheduled as a ring (same name). Windows and documents
    /// make block sizes uneven: there the plan is the fold or the schedule balanced by visible pairs
    /// (`workBalanced`), whichever has the shorter makespan (each step lasting as long as its busiest rank).
    public static func distflash(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        if problem.mask.kind == .full {
            return try ringSchedule(name: "distflash", problem: problem, ranks: ranks, layout: .contiguous, pass: pass)
        }
        let folded = try fold(problem: problem, ranks: ranks, pass: pass)
        guard problem.mask.kind != .causal || problem.mask.hasDocuments else { return folded }
        let balanced = try workBalanced(problem: problem, ranks: ranks, pass: pass)
        return balanced.stepMakespan < folded.stepMakespan ? balanced : folded
    }

    /// The fold itself (see `distflash`).
    static func fold(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        var builder = try PlanBuilder(name: "distflash", problem: problem, ranks: ranks, layout: .contiguous,
                                      pass: pass)
        for i in 0..<ranks { builder.compute(step: 0, rank: i, queryShard: i, keyShard: i) }
        for t in stride(from: 1, through: ranks / 2, by: 1) {
            let lastEvenRound = 2 * t == ranks
            for i in t..<ranks {
                if lastEvenRound, let split = builder.balancedSplit(queryShard: i, keyShard: i - t) {
                    builder.compute(step: t, rank: i, queryShard: i, rows: 0..<split, keyShard: i - t)
                    builder.compute(step: t, rank: i - t, queryShard: i, rows: split..<builder.rows(of: i).upperBound,
                                    keyShard: i - t)
                } else {
                    builder.compute(step: t, rank: i, queryShard: i, keyShard: i - t)
                }
            }
            if !lastEvenRound {
                for k in 0..<t { builder.compute(step: t, rank: k, queryShard: k + ranks - t, keyShard: k) }
            }
        }
        return builder.build(routing: .direct)
    }

    /// Balancing by visible pairs rather than by block count, for masks whose blocks differ in size (windows,
    /// documents), where a block may outweigh a rank's fair share (a long document on one shard's diagonal).
    /// - Blocks (q_i, kv_j), j ≤ i, are cut by query rows into pieces of at most half a fair share
    ///   (total / P / 2 visible pairs), with equal pairs per piece.
    /// - Pieces go, largest first, to the least loaded of: the query owner i, the K/V owner j (fetches q_i,
    ///   returns a partial), and the least loaded rank overall (fetches both) — owners win ties since they move
    ///   fewer bytes. That is longest-processing-time list scheduling: within 4/3 of the best makespan, here with
    ///   pieces no larger than half a share.
    /// - Each rank runs a piece it can compute from its own shard at step 0 (inputs for others need a step to
    ///   arrive) and the rest largest first, so one step's pieces are of similar size across ranks.
    /// Work units (visible pairs × heads) if every step lasts as long as its busiest rank.
    public var stepMakespan: Int { workByStep.reduce(0) { $0 + ($1.max() ?? 0) } }

    static func workBalanced(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        var builder = try PlanBuilder(name: "distflash", problem: problem, ranks: ranks, layout: .contiguous,
                                      pass: pass)
        typealias Piece = (query: Int, rows: Range<Int>, key: Int, pairs: Int)
        var pieces: [Piece] = []
        var blocks: [(query: Int, key: Int, counts: [Int])] = []
        for i in 0..<ranks {
            for j in 0...i {
                let counts = builder.counter.rowCounts(queryShard: i, rows: builder.rows(of: i), keyShard: j)
                if counts.contains(where: { $0 > 0 }) { blocks.append((i, j, counts)) }
            }
        }
        let total = blocks.reduce(0) { $0 + $1.counts.reduce(0, +) }
        let pieceLimit = max(1, total / (2 * ranks))
        for block in blocks {
            for rows in equalPairRuns(block.counts, limit: pieceLimit) {
                pieces.append((block.query, rows, block.key, block.counts[rows].reduce(0, +)))
            }
        }
        var load = [Int](repeating: 0, count: ranks)
        var queue = [[Piece]](repeating: [], count: ranks)
        for piece in pieces.sorted(by: { $0.pairs > $1.pairs }) {
            let idlest = load.indices.min { load[$0] < load[$1] }!
            let rank = [piece.query, piece.key, idlest].min { load[$0] < load[$1] }!
            load[rank] += piece.pairs
            queue[rank].append(piece)
        }
        for (rank, pieces) in queue.enumerated() {
            var order = pieces
            if let local = order.firstIndex(where: { $0.query == rank && $0.key == rank }) {
                order.insert(order.remove(at: local), at: 0)
            }
            let first = order.first.map { $0.query == rank && $0.key == rank } == true ? 0 : 1
            for (n, piece) in order.enumerated() {
                builder.compute(step: first + n, rank: rank, queryShard: piece.query, rows: piece.rows,
                                keyShard: piece.key)
            }
        }
        return builder.build(routing: .direct)
    }

    /// Cuts rows with visible-pair `counts` into consecutive runs of at most about `limit` pairs each (equal
    /// shares of the total), dropping rows that see nothing at either end.
    static func equalPairRuns(_ counts: [Int], limit: Int) -> [Range<Int>] {
        let total = counts.reduce(0, +)
        guard total > 0 else { return [] }
        let pieces = (total + limit - 1) / limit
        var runs: [Range<Int>] = []
        var start = counts.firstIndex { $0 > 0 }!, sum = 0
        for (row, count) in counts.enumerated() where row >= start {
            sum += count
            let boundary = (runs.count + 1) * total / pieces
            if sum >= boundary && runs.count < pieces - 1 {
                runs.append(start..<row + 1)
                start = row + 1
            }
        }
        let end = counts.lastIndex { $0 > 0 }! + 1
        if start < end { runs.append(start..<end) }
        return runs.filter { counts[$0].reduce(0, +) > 0 }
    }
}
