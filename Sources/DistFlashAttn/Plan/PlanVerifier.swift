extension Plan {
    /// Throws unless the plan computes `problem`'s attention exactly and its data flow is sound:
    /// - structure: ranks, shards, rows and heads in range; transfers posted at the step that lists them, consumed
    ///   later, never to the sender itself, of a content that belongs to the pass;
    /// - coverage: every (query, key, head) pair the mask lets through is computed exactly once (per block: the
    ///   tasks' row × head rectangles are disjoint and their visible pairs add up to the block's; checked pair by
    ///   pair with `AttentionMask.allows` when S²·H ≤ 2¹⁸), and no task has zero visible pairs;
    /// - data flow: every input a task uses is on its rank at that step (own shard, or a transfer posted at an
    ///   earlier step), every sender holds what it sends when it posts it (own data, data received earlier, or
    ///   results it computed at earlier steps), every transfer is used, and every partial result or gradient
    ///   computed away from its owner reaches the owner by the end.
    /// Errors are `.invalidProblem` and name the plan, step, rank and block or transfer.
    public func verify(problem: AttentionProblem) throws {
        let verifier = try PlanVerifier(plan: self, problem: problem)
        try verifier.checkStructure()
        try verifier.checkCoverage()
        try verifier.checkDataFlow()
    }
}

struct PlanVerifier {
    let plan: Plan
    let problem: AttentionProblem
    let counter: VisiblePairCounter

    /// Above this many (query, key, head) triples coverage is checked by counts only.
    static let exhaustiveLimit = 1 << 18

    init(plan: Plan, problem: AttentionProblem) throws {
        self.plan = plan
        self.problem = problem
        guard plan.ranks >= 1, plan.layout.ranks == plan.ranks, plan.layout.sequence == problem.sequence else {
            throw DistFlashError(.invalidProblem, "\(plan): its \(plan.layout) does not fit P = \(plan.ranks) "
                + "and the problem's S = \(problem.sequence)")
        }
        self.counter = VisiblePairCounter(problem: problem, layout: plan.layout)
    }

    var ranks: Int { plan.ranks }

    func fail(_ message: String) -> DistFlashError { DistFlashError(.invalidProblem, "\(plan): \(message)") }

    func fail(step: Int, rank: Int, _ message: String) -> DistFlashError {
        fail("step \(step), rank \(rank): \(message)")
    }

    func shardRows(_ shard: Int) -> Range<Int> { 0..<plan.layout.count(rank: shard) }

    // MARK: Structure

    func checkStructure() throws {
        let allRanks = 0..<ranks, allHeads = 0..<problem.heads
        for (t, step) in plan.steps.enumerated() {
            for task in step.tasks {
                guard allRanks.contains(task.rank), allRanks.contains(task.queryShard),
                      allRanks.contains(task.keyShard) else {
                    throw fail(step: t, rank: task.rank, "\(task) names a rank outside 0..<\(ranks)")
                }
                guard !task.rows.isEmpty, task.rows.clamped(to: shardRows(task.queryShard)) == task.rows,
                      !task.heads.isEmpty, task.heads.clamped(to: allHeads) == task.heads else {
                    throw fail(step: t, rank: task.rank, "\(task) has rows outside the shard's "
                        + "\(shardRows(task.queryShard).count) rows or heads outside 0..<\(problem.heads), or none")
                }
            }
            for transfer in step.transfers {
                guard allRanks.contains(transfer.from), allRanks.contains(transfer.to),
                      allRanks.contains(transfer.shard), transfer.from != transfer.to else {
                    throw fail(step: t, rank: transfer.from, "transfer \(transfer) names a rank outside 0..<\(ranks) "
                        + "or sends to itself")
                }
                guard transfer.content.occurs(in: plan.pass) else {
                    throw fail(step: t, rank: transfer.from,
                               "transfer \(transfer) does not belong to a \(plan.pass) pass")
                }
                let wholeShard = transfer.content == .keyValue || transfer.content == .keyValueGradient
                guard !transfer.rows.isEmpty, !transfer.heads.isEmpty,
                      transfer.rows.clamped(to: shardRows(transfer.shard)) == transfer.rows,
                      !wholeShard || transfer.rows == shardRows(transfer.shard),
                      transfer.heads.clamped(to: allHeads) == transfer.heads else {
                    throw fail(step: t, rank: transfer.from, "transfer \(transfer) has rows outside shard "
                        + "\(transfer.shard) (K/V and dK/dV take all its rows) or heads outside 0..<\(problem.heads)")
                }
                guard transfer.postedAt == t, transfer.consumedAt > t, transfer.consumedAt <= plan.steps.count else {
                    throw fail(step: t, rank: transfer.from, "transfer \(transfer) is listed at step \(t): it must be "
                        + "posted there and consumed at a later step ≤ \(plan.steps.count)")
                }
            }
        }
    }

    // MARK: Coverage

    func checkCoverage() throws {
        // Tasks of each block (query shard a, key shard b), at index a·P + b.
        var blocks = [[(step: Int, task: Plan.BlockTask)]](repeating: [], count: ranks * ranks)
        for (t, step) in plan.steps.enumerated() {
            for task in step.tasks {
                let pairs = counter.count(queryShard: task.queryShard, rows: task.rows, keyShard: task.keyShard)
                guard pairs > 0 else {
                    throw fail(step: t, rank: task.rank,
                               "\(task) has no visible pair: empty blocks must not be scheduled")
                }
                guard pairs == task.visiblePairs else {
                    throw fail(step: t, rank: task.rank, "\(task) claims \(task.visiblePairs) visible pairs, "
                        + "the mask lets \(pairs) through")
                }
                blocks[task.queryShard * ranks + task.keyShard].append((t, task))
            }
        }
        var total = 0
        for a in 0..<ranks {
            for b in 0..<ranks {
                let tasks = blocks[a * ranks + b]
                for (n, first) in tasks.enumerated() {
                    for second in tasks[(n + 1)...]
                    where first.task.rows.overlaps(second.task.rows) && first.task.heads.overlaps(second.task.heads) {
                        throw fail(step: second.step, rank: second.task.rank, "\(second.task) overlaps \(first.task) "
                            + "of rank \(first.task.rank) at step \(first.step): pairs would be computed twice")
                    }
                }
                let expected = counter.count(queryShard: a, rows: shardRows(a), keyShard: b) * problem.heads
                let covered = tasks.reduce(0) { $0 + $1.task.work }
                guard covered == expected else {
                    throw fail("block (q\(a), kv\(b)) has \(expected) visible (query, key, head) pairs but its tasks "
                        + "cover \(covered): a task is missing")
                }
                total += expected
            }
        }
        let needed = problem.visiblePairs * problem.heads
        guard total == needed else {
            throw fail("the blocks hold \(total) visible (query, key, head) pairs, the problem \(needed): "
                + "the \(plan.layout) does not partition the sequence")
        }
        if problem.sequence * problem.sequence * problem.heads <= Self.exhaustiveLimit { try checkEveryPair() }
    }

    /// Marks each pair a task computes (with the mask's own `allows`) and requires every visible pair marked once.
    private func checkEveryPair() throws {
        let s = problem.sequence, mask = problem.mask
        let documents = mask.documentIndices(of: Array(0..<s))
        func allows(_ i: Int, _ j: Int) -> Bool {
            mask.allows(query: i, key: j, queryDocument: documents[i], keyDocument: documents[j])
        }
        var computed = [UInt8](repeating: 0, count: s * s * problem.heads)
        for (t, step) in plan.steps.enumerated() {
            for task in step.tasks {
                for h in task.heads {
                    for row in task.rows {
                        let i = counter.positions[task.queryShard][row]
                        for j in counter.positions[task.keyShard] where allows(i, j) {
                            guard computed[(h * s + i) * s + j] == 0 else {
                                throw fail(step: t, rank: task.rank, "\(task) computes (query \(i), key \(j), head "
                                    + "\(h)) a second time")
                            }
                            computed[(h * s + i) * s + j] = 1
                        }
                    }
                }
            }
        }
        for h in 0..<problem.heads {
            for i in 0..<s {
                for j in 0..<s where allows(i, j) && computed[(h * s + i) * s + j] == 0 {
                    throw fail("(query \(i), key \(j), head \(h)) is visible but no task computes it")
                }
            }
        }
    }
}
