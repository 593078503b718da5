extension Plan {
    /// Bytes each rank holds beyond its own shard, `[rank][step]`, following the plan's transfers:
    /// ```
    /// received input (K/V, Q, Q/O/dO/LSE)   from the step it is posted (its buffer fills during that step)
    ///                                        through the last step that uses it on that rank: a task reading
    ///                                        it, or an onward send of it (ring relay); at least consumedAt
    /// result for another rank's shard        from the first step whose task adds to it through the step that
    ///   (partial (O, LSE), dQ, dK/dV)        sends it (the accumulator is float32, as large as the transfer)
    /// received result                        during the step it arrives in (merged on arrival)
    /// ```
    /// Sizes are the transfers' `bytes(problem:)`. A task uses a received shard if it reads that shard on that
    /// rank before the same shard arrives there again; rows and heads are not told apart (the builders send one
    /// region per shard and rank), so this may overstate, never understate, a plan that splits them.
    public func extraMemory(problem: AttentionProblem) -> [[Int]] {
        // The steps at which `rank` touches `shard`'s data of one kind (input or result, query or key side), in
        // increasing order, keyed by one Int: hashing it is much cheaper than a struct at P = 1024.
        typealias Use = Int
        func key(result: Bool, keySide: Bool, shard: Int, rank: Int) -> Use {
            ((shard * ranks + rank) << 2) | (result ? 2 : 0) | (keySide ? 1 : 0)
        }
        func use(_ transfer: Transfer, rank: Int) -> Use {
            let keySide = transfer.content == .keyValue || transfer.content == .keyValueGradient
            return key(result: transfer.content.isResult, keySide: keySide, shard: transfer.shard, rank: rank)
        }
        let taskCount = steps.reduce(0) { $0 + $1.tasks.count }
        var uses: [Use: [Int]] = [:]
        uses.reserveCapacity(2 * taskCount)
        for (t, step) in steps.enumerated() {
            for task in step.tasks {
                if task.rank != task.keyShard {
                    uses[key(result: false, keySide: true, shard: task.keyShard, rank: task.rank), default: []].append(t)
                    if pass == .backward {
                        uses[key(result: true, keySide: true, shard: task.keyShard, rank: task.rank), default: []]
                            .append(t)
                    }
                }
                if task.rank != task.queryShard {
                    for result in [false, true] {
                        uses[key(result: result, keySide: false, shard: task.queryShard, rank: task.rank),
                             default: []].append(t)
                    }
                }
            }
            for transfer in step.transfers where !transfer.content.isResult && transfer.from != transfer.shard {
                uses[use(transfer, rank: transfer.from), default: []].append(t)  // relayed onward
            }
        }

        // Arrival steps per (kind, shard, receiving rank) and send steps per (kind, shard, sending rank), to bound
        // each buffer's life by the next arrival or the previous send of the same data.
        var arrivals: [Use: [Int]] = [:], sends: [Use: [Int]] = [:]
        for step in steps {
            for transfer in step.transfers {
                if transfer.content.isResult {
                    sends[use(transfer, rank: transfer.from), default: []].append(transfer.postedAt)
                } else {
                    arrivals[use(transfer, rank: transfer.to), default: []].append(transfer.consumedAt)
                }
            }
        }

        // Difference arrays: +bytes at the first step held, −bytes after the last.
        var change = [[Int]](repeating: [Int](repeating: 0, count: steps.count + 1), count: ranks)
        func hold(_ bytes: Int, rank: Int, from first: Int, through last: Int) {
            change[rank][first] += bytes
            change[rank][min(last, steps.count - 1) + 1] -= bytes
        }
        for step in steps {
            for transfer in step.transfers {
                let bytes = transfer.bytes(problem: problem)
                if transfer.content.isResult {
                    hold(bytes, rank: transfer.to, from: transfer.postedAt, through: transfer.postedAt)
                    let key = use(transfer, rank: transfer.from)
                    let previous = sends[key]!.last { $0 < transfer.postedAt } ?? -1
                    let first = uses[key]?.first { $0 > previous && $0 < transfer.postedAt } ?? transfer.postedAt
                    hold(bytes, rank: transfer.from, from: first, through: transfer.postedAt)
                } else {
                    let key = use(transfer, rank: transfer.to)
                    let next = arrivals[key]!.first { $0 > transfer.consumedAt } ?? Int.max
                    let last = uses[key]?.last { $0 >= transfer.consumedAt && $0 < next } ?? transfer.consumedAt
                    hold(bytes, rank: transfer.to, from: transfer.postedAt, through: max(last, transfer.consumedAt))
                }
            }
        }
        return change.map { deltas in
            var held = 0
            return deltas.dropLast().map { delta in
                held += delta
                return held
            }
        }
    }
}
