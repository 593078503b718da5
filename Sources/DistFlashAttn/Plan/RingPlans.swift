extension Plan {
    /// Ring attention over contiguous shards, the baseline: at step t rank r computes (q_r, kv_{r−t mod P}) while
    /// K/V move one hop along the ring. Blocks without visible pairs are skipped and K/V travel only as far as the
    /// farthest rank that needs them, so under a causal mask rank r works r + ½ blocks: unbalanced, makespan P − ½.
    /// Backward: K/V travel the same way; each dK/dV partial goes straight back to its owner the step after.
    public static func ring(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        try ringSchedule(name: "ring", problem: problem, ranks: ranks, layout: .contiguous, pass: pass)
    }

    /// Ring attention over the zigzag layout (rank r holds chunks r and 2P−1−r of 2P): every block is about
    /// equally visible under a causal mask, so all P ranks work every step with K/V-only traffic.
    public static func zigzag(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        try ringSchedule(name: "zigzag", problem: problem, ranks: ranks, layout: .zigzag, pass: pass)
    }

    /// Ring attention over the striped layout (token i on rank i mod P): balanced like zigzag.
    public static func striped(problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        try ringSchedule(name: "striped", problem: problem, ranks: ranks, layout: .striped, pass: pass)
    }

    static func ringSchedule(name: String, problem: AttentionProblem, ranks: Int, layout: Layout.Kind,
                             pass: Pass) throws -> Plan {
        var builder = try PlanBuilder(name: name, problem: problem, ranks: ranks, layout: layout, pass: pass)
        for t in 0..<ranks {
            for r in 0..<ranks { builder.compute(step: t, rank: r, queryShard: r, keyShard: (r - t + ranks) % ranks) }
        }
        return builder.build(routing: .ringRelay)
    }
}
