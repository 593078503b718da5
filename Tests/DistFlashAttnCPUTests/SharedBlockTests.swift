import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnReference
import Foundation
import Testing

/// A block with reference semantics, as a device tensor has: primitives update it in place, and holding it twice
/// means holding the same storage. The executor must be correct for such blocks, which the value-typed host
/// `Tensor` cannot show (a copy there silently protects from aliasing).
final class SharedBlock: ShapedBlock, @unchecked Sendable {
    // Invariant: used by one rank thread at a time (blocks cross ranks only as copies, through the mailbox).
    var tensor: Tensor
    init(_ tensor: Tensor) { self.tensor = tensor }
    var shape: [Int] { tensor.shape }
    var byteCount: Int { tensor.byteCount }
}

/// The CPU primitives on `SharedBlock`s, every update written into the caller's object.
struct SharedBlocks: BlockBackend {
    let host = HostBlocks(CPUBackend(workers: 1))

    func filled(_ shape: [Int], with value: Float, like prototype: SharedBlock?) throws -> SharedBlock {
        SharedBlock(try host.filled(shape, with: value, like: nil))
    }
    func slice(_ block: SharedBlock, _ ranges: [Range<Int>]) throws -> SharedBlock {
        SharedBlock(try host.slice(block.tensor, ranges))
    }
    func write(_ values: SharedBlock, into block: inout SharedBlock, at ranges: [Range<Int>]) throws {
        try host.write(values.tensor, into: &block.tensor, at: ranges)
    }
    func add(_ values: SharedBlock, into block: inout SharedBlock, at ranges: [Range<Int>]) throws {
        try host.add(values.tensor, into: &block.tensor, at: ranges)
    }
    func forward(query: SharedBlock, queryPositions: [Int], key: SharedBlock, value: SharedBlock, keyPositions: [Int],
                 mask: AttentionMask, scale: Float, output: inout SharedBlock, logSumExp: inout SharedBlock) throws {
        try host.forward(query: query.tensor, queryPositions: queryPositions, key: key.tensor, value: value.tensor,
                         keyPositions: keyPositions, mask: mask, scale: scale, output: &output.tensor,
                         logSumExp: &logSumExp.tensor)
    }
    func merge(output: inout SharedBlock, logSumExp: inout SharedBlock, otherOutput: SharedBlock,
               otherLogSumExp: SharedBlock) throws {
        try host.merge(output: &output.tensor, logSumExp: &logSumExp.tensor, otherOutput: otherOutput.tensor,
                       otherLogSumExp: otherLogSumExp.tensor)
    }
    func backwardPreprocess(output: SharedBlock, outputGrad: SharedBlock) throws -> SharedBlock {
        SharedBlock(try host.backwardPreprocess(output: output.tensor, outputGrad: outputGrad.tensor))
    }
    func backward(query: SharedBlock, queryPositions: [Int], key: SharedBlock, value: SharedBlock,
                  keyPositions: [Int], mask: AttentionMask, scale: Float, outputGrad: SharedBlock,
                  logSumExp: SharedBlock, delta: SharedBlock, queryGrad: inout SharedBlock,
                  keyGrad: inout SharedBlock, valueGrad: inout SharedBlock) throws {
        try host.backward(query: query.tensor, queryPositions: queryPositions, key: key.tensor, value: value.tensor,
                          keyPositions: keyPositions, mask: mask, scale: scale, outputGrad: outputGrad.tensor,
                          logSumExp: logSumExp.tensor, delta: delta.tensor, queryGrad: &queryGrad.tensor,
                          keyGrad: &keyGrad.tensor, valueGrad: &valueGrad.tensor)
    }
    func finish() throws -> Double? { nil }
}

/// In-process mailboxes for `SharedBlock`s: a send copies the contents (as a transfer between devices does), a
/// receive delivers new objects, and the receive precisions must be the ones the plan's contents call for.
final class SharedMailbox: Communicator, @unchecked Sendable {
    let inner: InProcessCommunicator
    var ranks: Int { inner.ranks }
    init(ranks: Int) { inner = InProcessCommunicator(ranks: ranks, timeout: 20) }

    func post(_ exchange: Exchange<SharedBlock>, rank: Int) throws -> ExchangePending {
        for receive in exchange.receives where receive.precisions.count != receive.shapes.count {
            throw DistFlashError(.runtime, "receive \(receive.tag) gives \(receive.precisions.count) precisions for "
                + "\(receive.shapes.count) tensors")
        }
        return try inner.post(Exchange(sends: exchange.sends.map {
            .init(to: $0.to, tag: $0.tag, payload: $0.payload.map(\.tensor))
        }, receives: exchange.receives), rank: rank)
    }
    func wait(_ pending: ExchangePending, rank: Int) throws -> [[SharedBlock]] {
        try inner.wait(pending, rank: rank).map { $0.map(SharedBlock.init) }
    }
    func barrier(rank: Int) throws { try inner.barrier(rank: rank) }
    func abort(_ error: DistFlashError) { inner.abort(error) }
}

@Suite("The executor on in-place blocks (as on GPUs) equals the reference")
struct SharedBlockTests {
    static let cases: [DistributedCase] = Plan.Kind.allCases.flatMap { plan in
        [2, 3, 4].flatMap { ranks in
            [AttentionMask.causal, .full, .window(9), .documents([1, 20, 6, 26], .causal)].map {
                DistributedCase(plan: plan, ranks: ranks, mask: $0)
            }
        }
    }

    @Test(arguments: cases)
    func equalsReference(_ c: DistributedCase) throws {
        let problem = try AttentionProblem(sequence: 53, heads: 6, kvHeads: 2, headDim: 16, mask: c.mask)
        let x = RandomInputs(problem)
        let run = DistributedAttention(plan: c.plan, ranks: c.ranks)
        let plans = try RankAttention.Plans(c.plan, problem: problem, ranks: c.ranks)
        let layout = plans.forward.layout
        func shard(_ tensor: Tensor, _ rank: Int, axis: Int = 1) throws -> SharedBlock {
            SharedBlock(try layout.shard(tensor, rank: rank, axis: axis))
        }
        let forward = try run.run(plans.forward, problem, backends: { _ in SharedBlocks() },
                                  communicator: SharedMailbox(ranks: c.ranks)) { rank in
            [.query: try shard(x.query, rank), .key: try shard(x.key, rank), .value: try shard(x.value, rank)]
        }
        let result = AttentionPartial(output: try layout.unshard(forward.value.map { $0[.output]!.tensor }, axis: 1),
                                      logSumExp: try layout.unshard(forward.value.map { $0[.logSumExp]!.tensor }, axis: 2))
        // The backward takes the forward's own blocks, as a GPU run does (they never leave the device).
        let backward = try run.run(plans.backward, problem, backends: { _ in SharedBlocks() },
                                   communicator: SharedMailbox(ranks: c.ranks)) { rank in
            [.query: try shard(x.query, rank), .key: try shard(x.key, rank), .value: try shard(x.value, rank),
             .output: forward.value[rank][.output]!, .logSumExp: forward.value[rank][.logSumExp]!,
             .outputGrad: try shard(x.outputGrad, rank)]
        }
        let grads = AttentionGradients(query: try layout.unshard(backward.value.map { $0[.queryGrad]!.tensor }, axis: 1),
                                       key: try layout.unshard(backward.value.map { $0[.keyGrad]!.tensor }, axis: 1),
                                       value: try layout.unshard(backward.value.map { $0[.valueGrad]!.tensor }, axis: 1))
        let checks = ReferenceCheck.run(problem, query: x.query, key: x.key, value: x.value, result: result,
                                        outputGrad: x.outputGrad, gradients: grads)
        for check in checks { #expect(check.passed, "seed \(x.seed): \(check.summary)") }
    }
}
