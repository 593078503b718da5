import DistFlashAttn
import Testing

@Suite("Plans compute every visible pair once, with sound data flow")
struct PlanVerifierTests {
    /// Masks for a sequence of length s: causal, full, narrow and wide windows, random causal and full documents.
    static func masks(sequence s: Int, seed: UInt64) -> [AttentionMask] {
        var random = SeededRandom(seed: seed)
        var lengths: [Int] = []
        while lengths.reduce(0, +) < s {
            lengths.append(min(Int.random(in: 1...max(1, s / 3), using: &random), s - lengths.reduce(0, +)))
        }
        return [.causal, .full, .window(2), .window(max(1, s / 2)), .documents(lengths), .documents(lengths, .full)]
    }

    /// S = 3P + 1 (never divisible by P), H = 6 with H_kv = 2 so Ulysses splits and replicates heads.
    @Test(arguments: 1...64)
    func everyPlanVerifies(_ ranks: Int) throws {
        let s = 3 * ranks + 1
        for mask in Self.masks(sequence: s, seed: UInt64(ranks)) {
            let problem = try AttentionProblem(sequence: s, heads: 6, kvHeads: 2, headDim: 8, mask: mask)
            for kind in Plan.Kind.allCases {
                for pass in Plan.Pass.allCases {
                    let plan = try Plan.make(kind, problem: problem, ranks: ranks, pass: pass)
                    #expect(throws: Never.self, "\(plan), mask \(mask)") { try plan.verify(problem: problem) }
                }
            }
        }
    }

    /// Longer sequences, checked by visible-pair counts (S²·H is above the pair-by-pair limit), and S < P.
    @Test(arguments: [(8, 1001), (13, 777), (32, 2049), (9, 4), (16, 1)])
    func largerAndSparseSequencesVerify(_ ranks: Int, _ s: Int) throws {
        for mask in Self.masks(sequence: s, seed: UInt64(s)) {
            let problem = try AttentionProblem(sequence: s, heads: 4, kvHeads: 1, headDim: 8, mask: mask)
            for kind in Plan.Kind.allCases {
                for pass in Plan.Pass.allCases {
                    let plan = try Plan.make(kind, problem: problem, ranks: ranks, pass: pass)
                    #expect(throws: Never.self, "\(plan), mask \(mask)") { try plan.verify(problem: problem) }
                }
            }
        }
    }

    // MARK: Load balance

    /// Causal fold: ⌈P/2⌉ + 1 compute steps at most (plus one send-only step), at most one block per rank and
    /// step, and a makespan (sum over steps of the busiest rank's work) within 10 % of total/P; the plain ring
    /// needs about twice that.
    @Test(arguments: 2...16)
    func distflashBalancesCausal(_ ranks: Int) throws {
        let problem = try AttentionProblem(sequence: 64 * ranks + 5, heads: 1, headDim: 8)
        let total = Double(problem.visiblePairs)
        func makespan(_ plan: Plan) -> Double { Double(plan.workByStep.reduce(0) { $0 + $1.max()! }) }

        let fold = try Plan.distflash(problem: problem, ranks: ranks, pass: .forward)
        #expect(fold.steps.count <= ranks / 2 + 2)
        #expect(fold.steps.last!.tasks.isEmpty)  // the last round's helper partials return in a send-only step
        for step in fold.steps {
            let ranksBusy = step.tasks.map(\.rank)
            #expect(Set(ranksBusy).count == ranksBusy.count, "a rank computes two blocks in one step")
        }
        let ideal = total / Double(ranks)
        #expect(makespan(fold) <= 1.1 * ideal, "fold makespan \(makespan(fold)) vs ideal \(ideal)")
        let ring = try Plan.ring(problem: problem, ranks: ranks, pass: .forward)
        #expect(makespan(ring) >= 1.4 * makespan(fold), "ring \(makespan(ring)) vs fold \(makespan(fold))")
    }

    /// The fold for P = 4 matches DistFlashAttn's schedule, with the last round split by query rows.
    @Test func distflashFourRanksSchedule() throws {
        let problem = try AttentionProblem(sequence: 16, heads: 2, headDim: 8)
        let plan = try Plan.distflash(problem: problem, ranks: 4, pass: .forward)
        let tasks = plan.steps.map {
            $0.tasks.map { "\($0.rank):q\($0.queryShard)[\($0.rows)]kv\($0.keyShard)" }
        }
        #expect(tasks == [
            ["0:q0[0..<4]kv0", "1:q1[0..<4]kv1", "2:q2[0..<4]kv2", "3:q3[0..<4]kv3"],
            ["1:q1[0..<4]kv0", "2:q2[0..<4]kv1", "3:q3[0..<4]kv2", "0:q3[0..<4]kv0"],
            ["2:q2[0..<2]kv0", "0:q2[2..<4]kv0", "3:q3[0..<2]kv1", "1:q3[2..<4]kv1"],
            [],
        ])
        let sends = plan.steps.map { $0.transfers.map { "\($0.content.rawValue)\($0.shard) \($0.from)→\($0.to)" } }
        #expect(sends == [
            ["K/V0 0→1", "K/V1 1→2", "K/V2 2→3", "Q3 3→0"],
            ["K/V0 0→2", "K/V1 1→3", "Q2 2→0", "Q3 3→1"],
            ["partial (O, LSE)3 0→3"],
            ["partial (O, LSE)2 0→2", "partial (O, LSE)3 1→3"],
        ])
    }

    // MARK: Bytes

    @Test func keyValueTransfersAreKeyValueHeadSized() throws {
        let problem = try AttentionProblem(batch: 2, sequence: 12, heads: 6, kvHeads: 2, headDim: 8, mask: .full)
        let ring = try Plan.ring(problem: problem, ranks: 3, pass: .forward)
        let hop = ring.steps[0].transfers[0]
        #expect(hop.content == .keyValue && hop.bytes(problem: problem) == 2 * 2 * 4 * 2 * 8 * 4)
        // Ulysses on P = 4: heads split 2, 2, 1, 1 read K/V heads {0}, {0, 1}, {1}, {1}: four heads sent per shard.
        let ulysses = try Plan.ulysses(problem: problem, ranks: 4, pass: .forward)
        let kv = ulysses.steps.flatMap(\.transfers).filter { $0.content == .keyValue }
        let kvHeadsPerRank = (0..<4).map { problem.keyValueHeads(serving: problem.headSlice(rank: $0, of: 4)).count }
        #expect(kvHeadsPerRank == [1, 2, 1, 1])
        // Each rank receives the three other 3-token shards with the K/V heads it reads: 5 heads where 2 exist.
        let sentTokenHeads = kv.reduce(0) { $0 + problem.keyValueHeads(serving: $1.heads).count * $1.rows.count }
        #expect(sentTokenHeads == 3 * 3 * kvHeadsPerRank.reduce(0, +))
        for transfer in kv {
            let kvHeads = problem.keyValueHeads(serving: transfer.heads).count
            #expect(transfer.bytes(problem: problem) == 2 * 2 * transfer.rows.count * kvHeads * 8 * 4)
        }
    }

    // MARK: Broken plans are rejected

    static let brokenProblem = try! AttentionProblem(sequence: 21, heads: 2, headDim: 8)

    /// Breaks a correct 4-rank fold and returns the fragment the error must contain.
    static let breakages: [(String, Plan.Pass, @Sendable (inout Plan) -> Void)] = [
        ("a task is missing", .forward, { $0.steps[1].tasks.removeLast() }),
        ("computed twice", .forward, { $0.steps[2].tasks.append($0.steps[1].tasks[0]) }),
        ("neither its own nor sent to it", .forward, { $0.steps[0].transfers.removeFirst() }),
        ("consumed before it is posted", .backward, { plan in
            var moved = plan.steps[0].transfers.removeFirst()
            moved.postedAt = 1
            moved.consumedAt = 2
            plan.steps[1].transfers.append(moved)
        }),
        ("never reaches", .forward, { $0.steps[2].transfers.removeAll { $0.content == .partialOutput } }),
        ("never reaches", .backward, { $0.steps[2].transfers.removeAll { $0.content == .keyValueGradient } }),
        ("nobody uses", .forward, { plan in
            var extra = plan.steps[0].transfers[2]  // K/V of shard 2, which rank 0 never needs under causal
            extra.to = 0
            plan.steps[0].transfers.append(extra)
        }),
        ("claims 1 visible pairs", .forward, { $0.steps[0].tasks[0].visiblePairs = 1 }),
        ("has no visible pair", .forward, { plan in
            plan.steps[0].tasks.append(Plan.BlockTask(rank: 0, queryShard: 0, rows: 0..<6, keyShard: 3, heads: 0..<2,
                                                      visiblePairs: 0))
        }),
        ("no such result", .backward, { plan in
            var early = plan.steps[2].transfers.first { $0.content == .queryGradient }!
            plan.steps[2].transfers.removeAll { $0 == early }
            early.postedAt = 1
            early.consumedAt = 2
            plan.steps[1].transfers.append(early)
        }),
    ]

    @Test(arguments: breakages.indices)
    func brokenPlanIsRejected(_ index: Int) throws {
        let (fragment, pass, breakPlan) = Self.breakages[index]
        var plan = try Plan.distflash(problem: Self.brokenProblem, ranks: 4, pass: pass)
        try plan.verify(problem: Self.brokenProblem)
        breakPlan(&plan)
        do {
            try plan.verify(problem: Self.brokenProblem)
            Issue.record("accepted a plan that should fail with '\(fragment)'")
        } catch let error as DistFlashError {
            #expect(error.message.contains(fragment), "message was: \(error.message)")
            #expect(error.message.contains("plan 'distflash' (\(pass), P = 4)"), "message was: \(error.message)")
            print(error.message)
        }
    }
}
