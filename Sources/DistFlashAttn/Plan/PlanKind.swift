extension Plan {
    /// The plans this library can build, by name.
    public enum Kind: String, Sendable, CaseIterable {
        case ring, distflash, zigzag, striped, allgather, ulysses
    }

    /// Builds the plan of kind `kind` for `problem` on `ranks` ranks.
    public static func make(_ kind: Kind, problem: AttentionProblem, ranks: Int, pass: Pass) throws -> Plan {
        switch kind {
        case .ring: return try ring(problem: problem, ranks: ranks, pass: pass)
        case .distflash: return try distflash(problem: problem, ranks: ranks, pass: pass)
        case .zigzag: return try zigzag(problem: problem, ranks: ranks, pass: pass)
        case .striped: return try striped(problem: problem, ranks: ranks, pass: pass)
        case .allgather: return try allgather(problem: problem, ranks: ranks, pass: pass)
        case .ulysses: return try ulysses(problem: problem, ranks: ranks, pass: pass)
        }
    }
}
