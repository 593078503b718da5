extension Plan {
    /// DeepSpeed-Ulysses over contiguous shards: an all-to-all turns sequence shards into head shards — rank s gets
    /// every token of query heads `headSlice(rank: s)` (H split as evenly as possible; with H < P some ranks get
    /// none and only send) — each rank attends over the whole sequence, and an all-to-all returns the outputs.
    /// ```
    /// step 0   rank s computes its own diagonal block for its heads; the all-to-all (Q or Q/O/dO/LSE, and K/V)
    ///          is in flight
    /// step 1   rank s computes every other visible block (q_a, kv_b) for its heads
    /// step 2   all-to-all back: (O, LSE), or dQ and dK/dV, of each shard's rows for rank s's heads
    /// ```
    /// K/V move with the key/value heads that the rank's query heads read. When H_kv is not a multiple of P, heads
    /// of one key/value group land on several ranks and that K/V head is sent to each (and its dK/dV partials come
    /// back from each): the replication shows in the plan's transfers and `bytes(problem:)`.
    /// The per-block tasks are the plan's bookkeeping; an executor may run a rank's step-1 blocks as one call.
    public static func ulysses(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        var builder = try PlanBuilder(name: "ulysses", problem: problem, ranks: ranks, layout: .contiguous, pass: pass)
        for s in 0..<ranks {
            let heads = problem.headSlice(rank: s, of: ranks)
            builder.compute(step: 0, rank: s, queryShard: s, keyShard: s, heads: heads)
            for a in 0..<ranks {
                for b in 0..<ranks where (a, b) != (s, s) {
                    builder.compute(step: 1, rank: s, queryShard: a, keyShard: b, heads: heads)
                }
            }
        }
        return builder.build(routing: .direct)
    }
}
