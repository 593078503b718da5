import DistFlashAttn
import Testing

/// Makespan in work units: each step lasts as long as its busiest rank.
func makespan(_ plan: Plan) -> Int { plan.stepMakespan }

@Suite("distflash balances windows and documents by work")
struct PlanBalanceTests {
    @Test(arguments: [AttentionMask.window(300), .window(40), .documents([700, 90, 1100, 60, 50], .causal),
                      .documents([1500, 250, 250], .window(200))])
    func workBalancedBeatsRing(_ mask: AttentionMask) throws {
        let problem = try AttentionProblem(sequence: 2000, heads: 2, headDim: 8, mask: mask)
        for ranks in [3, 4, 8] {
            let fold = try Plan.distflash(problem: problem, ranks: ranks, pass: .forward)
            let ring = try Plan.ring(problem: problem, ranks: ranks, pass: .forward)
            try fold.verify(problem: problem)
            let total = fold.workByStep.joined().reduce(0, +)
            let largestBlock = fold.steps.flatMap(\.tasks).map(\.work).max() ?? 0
            // Greedy list scheduling: never worse than the ring, and within one largest block per step of ideal.
            #expect(makespan(fold) <= makespan(ring), "P=\(ranks): \(makespan(fold)) vs ring \(makespan(ring))")
            #expect(Double(makespan(fold)) <= Double(total) / Double(ranks) + Double(largestBlock * fold.steps.count),
                    "P=\(ranks): makespan \(makespan(fold)), total \(total)")
        }
    }
}
