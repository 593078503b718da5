import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Foundation
import Testing

/// Every plan × P × mask, with GQA and S not divisible by P: distributed O, LSE, dQ, dK, dV equal the float64
/// reference under the tolerance rule (and so the single-device result).
struct DistributedCase: Sendable, CustomTestStringConvertible {
    var plan: Plan.Kind
    var ranks: Int
    var mask: AttentionMask
    var testDescription: String { "\(plan) P=\(ranks) \(mask)" }
}

let distributedGrid: [DistributedCase] = Plan.Kind.allCases.flatMap { plan in
    [1, 2, 3, 4, 5, 8].flatMap { ranks in
        [AttentionMask.causal, .full, .window(9), .documents([1, 20, 6, 26], .causal)].map {
            DistributedCase(plan: plan, ranks: ranks, mask: $0)
        }
    }
}

@Suite("Distributed attention on CPU workers equals single-device attention")
struct DistributedTests {
    @Test(arguments: distributedGrid)
    func equalsReference(_ c: DistributedCase) throws {
        let problem = try AttentionProblem(sequence: 53, heads: 6, kvHeads: 2, headDim: 16, mask: c.mask)
        let x = RandomInputs(problem)
        var run = DistributedAttention(plan: c.plan, ranks: c.ranks)
        run.timeout = 20
        let backend: (Int) -> any AttentionBackend = { _ in CPUBackend(workers: 1) }
        let forward = try run.forward(problem, query: x.query, key: x.key, value: x.value, backend: backend)
        let backward = try run.backward(problem, query: x.query, key: x.key, value: x.value, result: forward.value,
                                        outputGrad: x.outputGrad, backend: backend)
        let checks = ReferenceCheck.run(problem, query: x.query, key: x.key, value: x.value, result: forward.value,
                                        outputGrad: x.outputGrad, gradients: backward.value)
        for check in checks { #expect(check.passed, "seed \(x.seed): \(check.summary)") }
    }

    @Test("distflash balanced by work (documents): row pieces on any rank", arguments: [3, 4, 5])
    func workBalancedDocuments(_ ranks: Int) throws {
        let problem = try AttentionProblem(sequence: 200, heads: 4, kvHeads: 2, headDim: 16,
                                           mask: .documents([150, 20, 30]))
        let x = RandomInputs(problem)
        let run = DistributedAttention(plan: .distflash, ranks: ranks)
        let backend: (Int) -> any AttentionBackend = { _ in CPUBackend(workers: 1) }
        let forward = try run.forward(problem, query: x.query, key: x.key, value: x.value, backend: backend)
        let pieces = forward.plan.steps.flatMap(\.tasks).filter { $0.rows.count < forward.plan.layout.count(rank: $0.queryShard) }
        #expect(!pieces.isEmpty, "expected the work-balanced schedule with row pieces")
        let backward = try run.backward(problem, query: x.query, key: x.key, value: x.value, result: forward.value,
                                        outputGrad: x.outputGrad, backend: backend)
        let checks = ReferenceCheck.run(problem, query: x.query, key: x.key, value: x.value, result: forward.value,
                                        outputGrad: x.outputGrad, gradients: backward.value)
        for check in checks { #expect(check.passed, "seed \(x.seed): \(check.summary)") }
    }

    @Test("a rank that throws mid-plan stops every rank promptly", arguments: [Plan.Kind.distflash, .ring, .ulysses])
    func failurePropagates(_ plan: Plan.Kind) throws {
        let problem = try AttentionProblem(sequence: 64, heads: 4, headDim: 8, mask: .causal)
        let x = RandomInputs(problem)
        var run = DistributedAttention(plan: plan, ranks: 4)
        run.timeout = 30
        run.failure = (rank: 2, step: 1)
        let start = Date()
        do {
            _ = try run.forward(problem, query: x.query, key: x.key, value: x.value) { _ in CPUBackend(workers: 1) }
            Issue.record("the injected failure did not fail the run")
        } catch let error as DistFlashError {
            #expect(error.message.contains("rank 2: failure injected at step 1"), "\(error.message)")
            #expect(error.message.contains("failed on 4 of 4 ranks"), "\(error.message)")
        }
        // Far below the timeout: the abort wakes every waiting rank at once.
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test("a rank that never sends makes the others time out instead of hanging")
    func timeoutInsteadOfHang() throws {
        let communicator = InProcessCommunicator(ranks: 2, timeout: 0.3)
        let start = Date()
        #expect(throws: DistFlashError.self) {
            _ = try communicator.exchange(Exchange(receives: [.init(from: 1, tag: 7, shapes: [[1]])]), rank: 0)
        }
        #expect(Date().timeIntervalSince(start) < 2)
    }

    @Test("a message whose shapes differ from the posted receive fails and aborts the run")
    func receiveShapesAreChecked() throws {
        let communicator = InProcessCommunicator(ranks: 2, timeout: 5)
        _ = try communicator.post(Exchange(sends: [.init(to: 1, tag: 3, payload: [Tensor(shape: [2, 3])])]), rank: 0)
        #expect {
            _ = try communicator.exchange(Exchange(receives: [.init(from: 0, tag: 3, shapes: [[3, 2]])]), rank: 1)
        } throws: { "\($0)".contains("holds shapes [[2, 3]], expected [[3, 2]]") }
        #expect(throws: DistFlashError.self) { try communicator.barrier(rank: 0) }
    }

    @Test("a simulated link delays messages by latency + bytes / bandwidth")
    func simulatedLink() throws {
        let communicator = InProcessCommunicator(ranks: 2, timeout: 5, link: LinkModel(name: "test", bandwidth: 4e6, latency: 0.05))
        let start = Date()
        // 400 kB → 0.1 s + 0.05 s
        _ = try communicator.post(Exchange(sends: [.init(to: 1, tag: 0, payload: [Tensor(shape: [100_000])])]), rank: 0)
        _ = try communicator.exchange(Exchange(receives: [.init(from: 0, tag: 0, shapes: [[100_000]])]), rank: 1)
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed >= 0.14 && elapsed < 1, "took \(elapsed) s")
    }
}
