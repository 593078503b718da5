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
    /// blocks, which a plain ring already balances, so it is scheduled as a ring (same name).
    public static func distflash(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        if problem.mask.kind == .full {
            return try ringSchedule(name: "distflash", problem: problem, ranks: ranks, layout: .contiguous, pass: pass)
        }
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
}
