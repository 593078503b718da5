extension Plan {
    /// All-gather K/V once over the zigzag layout: at step 0 every rank computes its own diagonal block while its
    /// K/V go to every rank that needs them; at step 1 it computes its queries against all other key shards.
    /// Memory: each rank holds all the K/V it needs at once (up to S tokens), unlike a ring's one or two shards.
    /// Backward: the same, then the dK/dV partials are reduce-scattered back to their owners (step 2).
    public static func allgather(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        var builder = try PlanBuilder(name: "allgather", problem: problem, ranks: ranks, layout: .zigzag, pass: pass)
        for r in 0..<ranks {
            builder.compute(step: 0, rank: r, queryShard: r, keyShard: r)
            for b in 0..<ranks where b != r { builder.compute(step: 1, rank: r, queryShard: r, keyShard: b) }
        }
        return builder.build(routing: .direct)
    }
}
