extension PlanVerifier {
    /// A shard region a task reads or a result it owes.
    private struct Region {
        var content: Plan.Transfer.Content
        var shard: Int
        var rows: Range<Int>
        var heads: Range<Int>
    }

    /// A result computed away from its owner and not yet sent there.
    private struct Owed {
        var region: Region
        var step: Int
        var task: Plan.BlockTask
    }

    /// Where a transfer sits in the plan: `plan.steps[step].transfers[index]`.
    private struct TransferID: Hashable {
        var step: Int
        var index: Int
    }

    /// Replays the plan step by step, tracking what each rank holds (see `Plan.verify`).
    func checkDataFlow() throws {
        var received = [[TransferID]](repeating: [], count: ranks)  // in arrival order
        var firstUse: [TransferID: Int] = [:]
        var owed = [[Owed]](repeating: [], count: ranks)

        for (t, step) in plan.steps.enumerated() {
            for transfer in step.transfers {
                let region = Region(content: transfer.content, shard: transfer.shard, rows: transfer.rows,
                                    heads: transfer.heads)
                if transfer.content.isResult {
                    guard transfer.to == transfer.shard, transfer.consumedAt == t + 1 else {
                        throw fail(step: t, rank: transfer.from, "result \(transfer) must go to shard "
                            + "\(transfer.shard)'s owner and be merged on arrival (consumed at step \(t + 1))")
                    }
                    let before = owed[transfer.from].count
                    owed[transfer.from].removeAll { $0.step < t && Self.same($0.region, region) }
                    guard owed[transfer.from].count < before else {
                        throw fail(step: t, rank: transfer.from, "sends \(transfer) but computed no such result before "
                            + "step \(t) (or already sent it)")
                    }
                } else if transfer.from != transfer.shard {
                    guard let source = received[transfer.from].first(where: { holds(sent($0), region) }) else {
                        throw fail(step: t, rank: transfer.from, "sends \(transfer) but neither owns nor has received "
                            + "that data by step \(t)")
                    }
                    firstUse[source] = firstUse[source] ?? t
                }
            }
            for task in step.tasks {
                for need in inputs(of: task) {
                    guard let source = received[task.rank].first(where: { holds(sent($0), need) }) else {
                        throw missingInput(need, of: task, at: t)
                    }
                    firstUse[source] = firstUse[source] ?? t
                }
                for region in results(of: task) { owed[task.rank].append(Owed(region: region, step: t, task: task)) }
            }
            for index in step.transfers.indices {
                received[step.transfers[index].to].append(TransferID(step: t, index: index))
            }
        }

        if let left = owed.joined().first {
            throw fail(step: left.step, rank: left.task.rank, "the \(left.region.content.rawValue) of \(left.task) "
                + "never reaches shard \(left.region.shard)'s owner")
        }
        for (t, step) in plan.steps.enumerated() {
            for (index, transfer) in step.transfers.enumerated() where !transfer.content.isResult {
                guard let use = firstUse[TransferID(step: t, index: index)] else {
                    throw fail(step: t, rank: transfer.from, "sends \(transfer) but nobody uses it")
                }
                guard use == transfer.consumedAt else {
                    throw fail(step: t, rank: transfer.from, "transfer \(transfer) is first used at step \(use)")
                }
            }
        }
    }

    private func sent(_ id: TransferID) -> Plan.Transfer { plan.steps[id.step].transfers[id.index] }

    /// What a task reads that its rank may not own: the query side and the K/V.
    private func inputs(of task: Plan.BlockTask) -> [Region] {
        var needs: [Region] = []
        if task.rank != task.queryShard {
            needs.append(Region(content: plan.pass == .forward ? .query : .backwardInputs, shard: task.queryShard,
                                rows: task.rows, heads: task.heads))
        }
        if task.rank != task.keyShard {
            needs.append(Region(content: .keyValue, shard: task.keyShard, rows: shardRows(task.keyShard),
                                heads: task.heads))
        }
        return needs
    }

    /// What a task produces for another rank: a partial (O, LSE) or dQ of its rows, dK/dV of its key shard.
    private func results(of task: Plan.BlockTask) -> [Region] {
        var owed: [Region] = []
        if task.rank != task.queryShard {
            owed.append(Region(content: plan.pass == .forward ? .partialOutput : .queryGradient,
                               shard: task.queryShard, rows: task.rows, heads: task.heads))
        }
        if plan.pass == .backward, task.rank != task.keyShard {
            owed.append(Region(content: .keyValueGradient, shard: task.keyShard, rows: shardRows(task.keyShard),
                               heads: task.heads))
        }
        return owed
    }

    /// Whether `transfer` carries all of `need`: K/V by the key/value heads the query heads read.
    private func holds(_ transfer: Plan.Transfer, _ need: Region) -> Bool {
        let heads = need.content == .keyValue
            ? (problem.keyValueHeads(serving: transfer.heads), problem.keyValueHeads(serving: need.heads))
            : (transfer.heads, need.heads)
        return transfer.content == need.content && transfer.shard == need.shard
            && transfer.rows.lowerBound <= need.rows.lowerBound && need.rows.upperBound <= transfer.rows.upperBound
            && heads.0.lowerBound <= heads.1.lowerBound && heads.1.upperBound <= heads.0.upperBound
    }

    private static func same(_ a: Region, _ b: Region) -> Bool {
        a.content == b.content && a.shard == b.shard && a.rows == b.rows && a.heads == b.heads
    }

    /// The error for an input that is not on the task's rank: posted too late, or never sent.
    private func missingInput(_ need: Region, of task: Plan.BlockTask, at t: Int) -> DistFlashError {
        let what = "\(task) needs \(need.content.rawValue) of shard \(need.shard)"
        for (s, step) in plan.steps.enumerated() {
            for transfer in step.transfers where transfer.to == task.rank && holds(transfer, need) {
                return fail(step: t, rank: task.rank, "\(what), but the transfer is posted at step \(s) and arrives "
                    + "only for step \(s + 1): consumed before it is posted")
            }
        }
        return fail(step: t, rank: task.rank, "\(what), which is neither its own nor sent to it")
    }
}
