import DistFlashAttn
import Foundation
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A device of 1 TFLOP/s keeps numbers readable; the ideal link has infinite bandwidth and zero latency.
private let unitDevice = DeviceModel(name: "unit", flopsPerSecond: 1e12)
private let idealSimulator = Simulator(device: unitDevice, link: .ideal, overlap: true)

/// Causal problem with n tokens per rank.
private func causal(ranks: Int, tokensPerRank n: Int, heads: Int = 2, kvHeads: Int? = nil) throws -> AttentionProblem {
    try AttentionProblem(sequence: ranks * n, heads: heads, kvHeads: kvHeads, headDim: 16, mask: .causal)
}

/// Sum over steps of the busiest rank's compute: the makespan when communication is free.
private func computeOnlyMakespan(_ plan: Plan, problem: AttentionProblem, device: DeviceModel) -> Double {
    let factor = plan.pass == .backward ? 2.5 : 1
    return plan.workByStep.reduce(0) { total, work in
        total + 4 * Double(problem.batch * problem.headDim * (work.max() ?? 0)) * factor / device.flopsPerSecond
    }
}

@Suite("Simulator: ideal-case arithmetic, overlap, bytes and memory")
struct SimulatorTests {
    /// Ring, causal, n tokens per rank, free communication: rank P−1 works every step, so the makespan is one
    /// diagonal n(n+1)/2 plus P−1 full blocks n², against (Pn)(Pn+1)/2 pairs in all:
    /// speedup = P(Pn+1) / ((2P−1)n + 1), just above P²/(2P−1) (by a factor 1 + (P−1)/(P(2P−1)n + P)).
    @Test(arguments: [2, 3, 4, 5, 8, 16])
    func ringSpeedupIsPSquaredOver2PMinus1(ranks p: Int) throws {
        let n = 256
        let problem = try causal(ranks: p, tokensPerRank: n)
        let report = idealSimulator.simulate(try Plan.ring(problem: problem, ranks: p, pass: .forward), problem: problem)
        let exact = Double(p * (p * n + 1)) / Double((2 * p - 1) * n + 1)
        let limit = Double(p * p) / Double(2 * p - 1)
        print("ring P=\(p): speedup \(report.speedup), exact \(exact), limit P²/(2P−1) = \(limit)")
        #expect(abs(report.speedup - exact) <= 1e-9 * exact)
        #expect(report.speedup > limit && report.speedup < limit * (1 + 1 / Double(n)))
        #expect(abs(report.efficiency - Double(p) / Double(2 * p - 1)) < 1 / Double(n))
        #expect(abs(report.meanIdleFraction - (1 - report.efficiency)) < 1e-12)
    }

    /// The fold: odd P has (P−1)/2 full rounds after the diagonal; even P has P/2 − 1 and a last round whose
    /// blocks are halved by rows (n even), so the makespan is n(n+1)/2 + (P−1)·n²/2 and the speedup exactly P.
    @Test(arguments: [2, 3, 4, 5, 8, 16])
    func distflashSpeedupIsP(ranks p: Int) throws {
        let n = 256
        let problem = try causal(ranks: p, tokensPerRank: n)
        for pass in Plan.Pass.allCases {
            let plan = try Plan.distflash(problem: problem, ranks: p, pass: pass)
            let report = idealSimulator.simulate(plan, problem: problem)
            print("distflash P=\(p) \(pass): speedup \(report.speedup), idle \(report.meanIdleFraction)")
            #expect(abs(report.speedup - Double(p)) <= 1e-9 * Double(p))
            #expect(abs(report.efficiency - 1) <= 1e-9)
            // Against the ring: (2P − 1)/P in the limit (1.875 at P = 8).
            let ring = idealSimulator.simulate(try Plan.ring(problem: problem, ranks: p, pass: pass), problem: problem)
            #expect(abs(ring.makespan / report.makespan - Double(2 * p - 1) / Double(p)) < 1 / Double(n))
        }
    }

    /// With free communication, overlap on or off, the makespan is Σ_t max_r compute(r, t).
    @Test(arguments: Plan.Kind.allCases)
    func freeCommunicationGivesComputeOnlyMakespan(kind: Plan.Kind) throws {
        for p in [1, 3, 4, 8] {
            let problem = try causal(ranks: p, tokensPerRank: 37)
            for pass in Plan.Pass.allCases {
                let plan = try Plan.make(kind, problem: problem, ranks: p, pass: pass)
                let expected = computeOnlyMakespan(plan, problem: problem, device: unitDevice)
                for overlap in [true, false] {
                    var simulator = idealSimulator
                    simulator.overlap = overlap
                    let makespan = simulator.simulate(plan, problem: problem).makespan
                    #expect(abs(makespan - expected) <= 1e-12 * expected, "\(plan) overlap \(overlap)")
                }
            }
        }
    }

    /// With a finite link, overlapping never loses and never beats compute alone.
    @Test(arguments: Plan.Kind.allCases)
    func overlapNeverSlower(kind: Plan.Kind) throws {
        for link in [LinkModel.nvlink, .infiniband, LinkModel(name: "slow", bandwidth: 1e6, latency: 1e-3)] {
            for p in [2, 3, 4, 8] {
                let problem = try causal(ranks: p, tokensPerRank: 64, heads: 4, kvHeads: 2)
                for pass in Plan.Pass.allCases {
                    let plan = try Plan.make(kind, problem: problem, ranks: p, pass: pass)
                    let on = Simulator(device: .h100, link: link, overlap: true).simulate(plan, problem: problem)
                    let off = Simulator(device: .h100, link: link, overlap: false).simulate(plan, problem: problem)
                    #expect(off.makespan >= on.makespan, "\(plan) on \(link.name)")
                    #expect(on.makespan >= computeOnlyMakespan(plan, problem: problem, device: .h100) * (1 - 1e-12))
                }
            }
        }
    }

    /// Two ranks, ring, forward: step 0 both compute their diagonal while rank 0 sends K/V to rank 1; step 1
    /// rank 1 computes its full block. Overlap: max(diagonal, link) + full; without: diagonal + link + full.
    @Test func handComputedRingOfTwo() throws {
        let n = 100
        let problem = try AttentionProblem(sequence: 2 * n, heads: 2, headDim: 16, mask: .causal, dtype: .bf16)
        let plan = try Plan.ring(problem: problem, ranks: 2, pass: .forward)
        let link = LinkModel(name: "test", bandwidth: 1e9, latency: 1e-6)
        let flop = 4.0 * 16 * 2 / 1e12  // seconds per visible pair (B = 1, D = 16, H = 2)
        let diagonal = Double(n * (n + 1) / 2) * flop, full = Double(n * n) * flop
        let transfer = 1e-6 + Double(2 * n * 2 * 16 * 2) / 1e9  // K and V: 2 · n · H_kv · D · 2 bytes (bf16)
        let on = Simulator(device: unitDevice, link: link, overlap: true).simulate(plan, problem: problem)
        let off = Simulator(device: unitDevice, link: link, overlap: false).simulate(plan, problem: problem)
        #expect(abs(on.makespan - (max(diagonal, transfer) + full)) < 1e-15)
        #expect(abs(off.makespan - (diagonal + transfer + full)) < 1e-15)
        #expect(on.ranks[0].bytesSent == 2 * n * 2 * 16 * 2 && on.ranks[1].bytesReceived == on.ranks[0].bytesSent)
    }

    /// Per-rank bytes are the plan's transfers, summed by sender and by receiver.
    @Test(arguments: Plan.Kind.allCases)
    func bytesPerRankAreThePlansTransfers(kind: Plan.Kind) throws {
        for p in [3, 4, 8] {
            let problem = try causal(ranks: p, tokensPerRank: 50, heads: 6, kvHeads: 2)
            for pass in Plan.Pass.allCases {
                let plan = try Plan.make(kind, problem: problem, ranks: p, pass: pass)
                let report = Simulator(device: .h100, link: .nvlink).simulate(plan, problem: problem)
                var sent = [Int](repeating: 0, count: p), received = [Int](repeating: 0, count: p)
                for transfer in plan.steps.flatMap(\.transfers) {
                    sent[transfer.from] += transfer.bytes(problem: problem)
                    received[transfer.to] += transfer.bytes(problem: problem)
                }
                #expect(report.ranks.map(\.bytesSent) == sent, "\(plan)")
                #expect(report.ranks.map(\.bytesReceived) == received, "\(plan)")
                #expect(sent.reduce(0, +) == plan.bytes(problem: problem))
            }
        }
    }

    /// GQA: K/V carry H_kv heads, so a ring (K/V only) moves H/H_kv times fewer bytes, and the fold's K/V share
    /// shrinks by the same factor while its Q and partial-output traffic stays.
    @Test func groupedQueryAttentionCutsKeyValueBytes() throws {
        let (p, heads) = (8, 8)
        for kvHeads in [1, 2, 4] {
            let mha = try causal(ranks: p, tokensPerRank: 64, heads: heads)
            let gqa = try causal(ranks: p, tokensPerRank: 64, heads: heads, kvHeads: kvHeads)
            let simulator = Simulator(device: .h100, link: .nvlink)
            let ringMHA = simulator.simulate(try Plan.ring(problem: mha, ranks: p, pass: .forward), problem: mha)
            let ringGQA = simulator.simulate(try Plan.ring(problem: gqa, ranks: p, pass: .forward), problem: gqa)
            for r in 0..<p {
                #expect(ringMHA.ranks[r].bytesSent == ringGQA.ranks[r].bytesSent * (heads / kvHeads))
            }
            func keyValueBytes(_ problem: AttentionProblem) throws -> Int {
                try Plan.distflash(problem: problem, ranks: p, pass: .forward).steps.flatMap(\.transfers)
                    .filter { $0.content == .keyValue }.reduce(0) { $0 + $1.bytes(problem: problem) }
            }
            #expect(try keyValueBytes(mha) == keyValueBytes(gqa) * (heads / kvHeads))
        }
    }

    /// Ring forward: rank r ≥ 2 holds the K/V shard it computes with and the next one arriving (double
    /// buffering), rank 1 only K/V of rank 0, rank 0 nothing.
    @Test func ringHoldsTwoKeyValueShards() throws {
        let (p, n) = (6, 64)
        let problem = try causal(ranks: p, tokensPerRank: n, heads: 4, kvHeads: 2)
        let report = idealSimulator.simulate(try Plan.ring(problem: problem, ranks: p, pass: .forward),
                                             problem: problem)
        let shard = 2 * n * 2 * 16 * 4  // K and V, fp32
        #expect(report.ranks.map(\.peakExtraBytes) == [0, shard] + [Int](repeating: 2 * shard, count: p - 2))
    }

    /// The chart is well-formed XML with a box per task and per transfer; text is escaped.
    @Test(arguments: [Plan.Kind.distflash, .ring, .ulysses])
    func ganttIsValidXML(kind: Plan.Kind) throws {
        let problem = try AttentionProblem(sequence: 1000, heads: 4, kvHeads: 2, headDim: 16,
                                           mask: .documents([300, 700]))
        for pass in Plan.Pass.allCases {
            let plan = try Plan.make(kind, problem: problem, ranks: 5, pass: pass)
            let report = Simulator().simulate(plan, problem: problem)
            let svg = GanttSVG.render(plan: plan, problem: problem, report: report)
            let parser = XMLParser(data: Data(svg.utf8))
            #expect(parser.parse(), "\(plan): \(parser.parserError.map { "\($0)" } ?? "")")
            let boxes = svg.components(separatedBy: "<rect ").count - 1
            #expect(boxes >= plan.steps.reduce(0) { $0 + $1.tasks.count + $1.transfers.count })
        }
        #expect(GanttSVG.escape(#"a<b & "c" > 'd'"#) == "a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;")
    }
}
