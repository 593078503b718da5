/// Assembles a plan from task placements: a plan builder only says which rank computes which block at which step;
/// the transfers follow from that, so no builder can forget (or add) one:
/// - inputs (K/V, and Q or Q/O/dO/LSE for a rank computing another rank's queries) are sent at the step before
///   their first use — directly from the owner, or hop by hop along the ring (`Routing.ringRelay`);
/// - results for shards the rank does not own (partial (O, LSE), dQ, dK/dV) are sent to the owner at the step
///   after the last task that contributes to them, one transfer per region (partials of one region merge locally).
struct PlanBuilder {
    enum Routing {
        /// Each input goes straight from its owner to each rank that needs it.
        case direct
        /// K/V of shard j travel j → j+1 → … (mod P) up to the farthest rank that needs them; rank j+d must use
        /// them at step d (the ring schedule). Query-side inputs never move.
        case ringRelay
    }

    let name: String
    let problem: AttentionProblem
    let layout: Layout
    let pass: Plan.Pass
    let counter: VisiblePairCounter
    private var tasks: [(step: Int, task: Plan.BlockTask)] = []

    init(name: String, problem: AttentionProblem, ranks: Int, layout kind: Layout.Kind, pass: Plan.Pass) throws {
        guard ranks >= 1 else {
            throw DistFlashError(.invalidProblem, "plan '\(name)': ranks P = \(ranks) must be ≥ 1")
        }
        self.name = name
        self.problem = problem
        self.layout = try Layout(kind, sequence: problem.sequence, ranks: ranks)
        self.pass = pass
        self.counter = VisiblePairCounter(problem: problem, layout: layout)
    }

    var ranks: Int { layout.ranks }
    var allHeads: Range<Int> { 0..<problem.heads }

    /// All local rows of rank `shard`.
    func rows(of shard: Int) -> Range<Int> { 0..<layout.count(rank: shard) }

    /// Schedules the block at `step` on `rank` unless it is empty (no rows, no heads or no visible pair).
    mutating func compute(step: Int, rank: Int, queryShard: Int, rows: Range<Int>? = nil, keyShard: Int,
                          heads: Range<Int>? = nil) {
        let rows = rows ?? self.rows(of: queryShard), heads = heads ?? allHeads
        guard !heads.isEmpty else { return }
        let pairs = counter.count(queryShard: queryShard, rows: rows, keyShard: keyShard)
        guard pairs > 0 else { return }
        tasks.append((step, Plan.BlockTask(rank: rank, queryShard: queryShard, rows: rows, keyShard: keyShard,
                                           heads: heads, visiblePairs: pairs)))
    }

    /// A local row n of `queryShard` that splits the block against `keyShard` into rows `..<n` and `n...` with
    /// visible pairs as equal as possible, both non-zero; nil when no such split exists.
    func balancedSplit(queryShard: Int, keyShard: Int) -> Int? {
        let counts = counter.rowCounts(queryShard: queryShard, rows: rows(of: queryShard), keyShard: keyShard)
        let total = counts.reduce(0, +)
        var best: (row: Int, imbalance: Int)?
        var prefix = 0
        for row in 1..<max(counts.count, 1) {
            prefix += counts[row - 1]
            guard prefix > 0, prefix < total else { continue }
            let imbalance = abs(total - 2 * prefix)
            if best == nil || imbalance < best!.imbalance { best = (row, imbalance) }
        }
        return best?.row
    }

    func build(routing: Routing) -> Plan {
        var transfers = inputTransfers(routing: routing) + resultTransfers()
        transfers.sort { ($0.postedAt, $0.from, $0.to) < ($1.postedAt, $1.from, $1.to) }
        let stepCount = max(tasks.map { $0.step + 1 }.max() ?? 1, transfers.map { $0.postedAt + 1 }.max() ?? 1)
        var steps = [Plan.Step](repeating: Plan.Step(), count: stepCount)
        for (step, task) in tasks { steps[step].tasks.append(task) }
        for transfer in transfers { steps[transfer.postedAt].transfers.append(transfer) }
        return Plan(name: name, ranks: ranks, layout: layout, pass: pass, steps: steps)
    }

    // MARK: Deriving transfers

    /// A region of one shard's data wanted on (or owed to) a rank.
    private struct Region: Hashable {
        var content: Plan.Transfer.Content
        var shard: Int
        var rows: Range<Int>
        var heads: Range<Int>
        var rank: Int
    }

    /// Regions in first-seen order with the first (inputs) or last (results) step they matter at.
    private struct RegionSteps {
        var order: [Region] = []
        var step: [Region: Int] = [:]

        mutating func note(_ region: Region, at step: Int, keep: (Int, Int) -> Int) {
            if let seen = self.step[region] { self.step[region] = keep(seen, step) } else {
                order.append(region)
                self.step[region] = step
            }
        }
    }

    private func inputTransfers(routing: Routing) -> [Plan.Transfer] {
        var needs = RegionSteps()
        let queryContent: Plan.Transfer.Content = pass == .forward ? .query : .backwardInputs
        // A rank computing several row pieces of one query shard receives the rows they span once.
        var span: [Region: Range<Int>] = [:]
        for (_, task) in tasks where task.rank != task.queryShard {
            let key = Region(content: queryContent, shard: task.queryShard, rows: 0..<0, heads: task.heads, rank: task.rank)
            let rows = span[key] ?? task.rows
            span[key] = min(rows.lowerBound, task.rows.lowerBound)..<max(rows.upperBound, task.rows.upperBound)
        }
        for (step, task) in tasks {
            if task.rank != task.queryShard {
                let key = Region(content: queryContent, shard: task.queryShard, rows: 0..<0, heads: task.heads,
                                 rank: task.rank)
                needs.note(Region(content: queryContent, shard: task.queryShard, rows: span[key]!, heads: task.heads,
                                  rank: task.rank), at: step, keep: min)
            }
            if task.rank != task.keyShard {
                needs.note(Region(content: .keyValue, shard: task.keyShard, rows: rows(of: task.keyShard),
                                  heads: task.heads, rank: task.rank), at: step, keep: min)
            }
        }
        switch routing {
        case .direct:
            return needs.order.map { need in
                let first = needs.step[need]!
                precondition(first >= 1, "\(name): rank \(need.rank) needs \(need.content.rawValue) at step 0")
                return Plan.Transfer(content: need.content, shard: need.shard, rows: need.rows, heads: need.heads,
                                     from: need.shard, to: need.rank, postedAt: first - 1, consumedAt: first)
            }
        case .ringRelay:
            // Shard j's K/V reach distance d (rank j+d) at the end of step d − 1, just in time for step d.
            var farthest: [Region: Int] = [:]
            var order: [Region] = []
            for need in needs.order {
                precondition(need.content == .keyValue, "\(name): a ring moves only K/V")
                let distance = (need.rank - need.shard + ranks) % ranks
                precondition(needs.step[need] == distance, "\(name): ring rank \(need.rank) uses K/V off its turn")
                var chain = need
                chain.rank = need.shard
                if farthest[chain] == nil { order.append(chain) }
                farthest[chain] = max(farthest[chain] ?? 0, distance)
            }
            return order.flatMap { chain in
                (1...farthest[chain]!).map { d in
                    Plan.Transfer(content: .keyValue, shard: chain.shard, rows: chain.rows, heads: chain.heads,
                                  from: (chain.shard + d - 1) % ranks, to: (chain.shard + d) % ranks,
                                  postedAt: d - 1, consumedAt: d)
                }
            }
        }
    }

    private func resultTransfers() -> [Plan.Transfer] {
        var owed = RegionSteps()
        for (step, task) in tasks {
            if task.rank != task.queryShard {
                owed.note(Region(content: pass == .forward ? .partialOutput : .queryGradient, shard: task.queryShard,
                                 rows: task.rows, heads: task.heads, rank: task.rank), at: step, keep: max)
            }
            if pass == .backward, task.rank != task.keyShard {
                owed.note(Region(content: .keyValueGradient, shard: task.keyShard, rows: rows(of: task.keyShard),
                                 heads: task.heads, rank: task.rank), at: step, keep: max)
            }
        }
        return owed.order.map { result in
            let last = owed.step[result]!
            return Plan.Transfer(content: result.content, shard: result.shard, rows: result.rows, heads: result.heads,
                                 from: result.rank, to: result.shard, postedAt: last + 1, consumedAt: last + 2)
        }
    }
}
