import Foundation

/// The tensors one rank holds for its own shard.
public enum ShardTensor: Hashable, Sendable {
    /// Inputs: Q, O, dO `[B, n, H, D]`, K, V `[B, n, H_kv, D]`, LSE `[B, H, n]`.
    case query, key, value, output, outputGrad, logSumExp
    /// Backward results: dQ `[B, n, H, D]`, dK, dV `[B, n, H_kv, D]`.
    case queryGrad, keyGrad, valueGrad

    /// The axis of its tokens: 2 for LSE `[B, H, n]`, 1 for the others.
    public var tokenAxis: Int { self == .logSumExp ? 2 : 1 }

    /// Q, K, V and dO are inputs (the problem's input precision); O, LSE and gradients are fp32 accumulators.
    public var precision: BlockPrecision {
        switch self {
        case .query, .key, .value, .outputGrad: return .input
        case .output, .logSumExp, .queryGrad, .keyGrad, .valueGrad: return .accumulator
        }
    }
}

/// One rank running a plan: its own shards, the inputs it has received, and the partial results it computes for
/// other ranks. `run` is the one executor loop for every plan and both passes:
/// ```
/// for each step t:
///     post this rank's sends of step t        (they travel while step t computes: overlap)
///     compute this rank's blocks of step t
///     receive this rank's messages of step t  (inputs are kept for later steps; results are merged at once)
/// ```
/// Shapes: own query-side tensors `[B, n, H, D]` (LSE `[B, H, n]`), own K/V `[B, n, H_kv, D]`, n = the rank's
/// token count under the plan's layout. Every tensor is a `Backend.Block`, so on a GPU nothing leaves the device.
final class RankWorker<Backend: BlockBackend> {
    typealias Block = Backend.Block
    let rank: Int
    let plan: Plan
    let problem: AttentionProblem
    let backend: Backend
    let communicator: any Communicator<Block>
    let overlap: Bool
    /// Step at which this rank throws on purpose (tests of failure handling).
    let failAt: Int?

    /// Own shards: Q, K, V and, backward, O, dO, LSE.
    private var own: [ShardTensor: Block]
    /// Received inputs, by region, and the last step that uses each.
    private var inputs: [RegionKey: [Block]] = [:]
    private var lastUse: [RegionKey: Int] = [:]
    /// Results for other ranks' shards, by the region of the transfer that returns them.
    private var results: [RegionKey: [Block]] = [:]
    private(set) var statistics = RankStatistics()

    init(rank: Int, plan: Plan, problem: AttentionProblem, backend: Backend,
         communicator: any Communicator<Block>, overlap: Bool, failAt: Int?, own: [ShardTensor: Block]) {
        (self.rank, self.plan, self.problem, self.backend) = (rank, plan, problem, backend)
        (self.communicator, self.overlap, self.failAt, self.own) = (communicator, overlap, failAt, own)
        planLastUses()
    }

    // MARK: The loop

    /// Runs every step; returns the own accumulators: forward .output, .logSumExp; backward .queryGrad, .keyGrad, .valueGrad.
    func run() throws -> [ShardTensor: Block] {
        let n = plan.layout.count(rank: rank)
        let (b, h, hkv, d) = (problem.batch, problem.heads, problem.kvHeads, problem.headDim)
        if plan.pass == .forward {
            own[.output] = try backend.filled([b, n, h, d], with: 0, like: nil)
            own[.logSumExp] = try backend.filled([b, h, n], with: -.infinity, like: nil)
        } else {
            own[.queryGrad] = try backend.filled([b, n, h, d], with: 0, like: nil)
            own[.keyGrad] = try backend.filled([b, n, hkv, d], with: 0, like: nil)
            own[.valueGrad] = try backend.filled([b, n, hkv, d], with: 0, like: nil)
        }
        var tag = 0
        for (t, step) in plan.steps.enumerated() {
            if failAt == t {
                throw DistFlashError(.runtime, "rank \(rank): failure injected at step \(t)")
            }
            let tags = tag..<tag + step.transfers.count
            tag = tags.upperBound
            var exchange = Exchange<Block>()
            var incoming: [Plan.Transfer] = []
            for (i, transfer) in step.transfers.enumerated() {
                if transfer.from == rank {
                    let payload = try outgoing(transfer)
                    exchange.sends.append(.init(to: transfer.to, tag: tags.lowerBound + i, payload: payload))
                    statistics.bytesSent += payload.reduce(0) { $0 + $1.byteCount }
                } else if transfer.to == rank {
                    exchange.receives.append(.init(from: transfer.from, tag: tags.lowerBound + i,
                                                   shapes: transfer.payloadShapes(problem: problem),
                                                   precisions: transfer.content.payloadPrecisions))
                    incoming.append(transfer)
                }
            }
            let pending = try atStep(t) { try communicator.post(exchange, rank: rank) }
            if !overlap { try atStep(t) { try receive(pending, incoming) } }
            for task in step.tasks where task.rank == rank {
                let start = Date()
                if plan.pass == .forward { try forward(task) } else { try backward(task) }
                statistics.computeSeconds += Date().timeIntervalSince(start)
            }
            if overlap { try atStep(t) { try receive(pending, incoming) } }
            statistics.peakExtraBytes = max(statistics.peakExtraBytes, extraBytes)
            for (key, last) in lastUse where last <= t { inputs[key] = nil }
        }
        if let deviceSeconds = try backend.finish() { statistics.computeSeconds = deviceSeconds }
        try communicator.barrier(rank: rank)
        return plan.pass == .forward ? [.output: own[.output]!, .logSumExp: own[.logSumExp]!]
            : [.queryGrad: own[.queryGrad]!, .keyGrad: own[.keyGrad]!, .valueGrad: own[.valueGrad]!]
    }

    /// Runs a communication call of step `t`, naming the step and pass in its error.
    private func atStep<T>(_ t: Int, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DistFlashError {
            throw DistFlashError(error.code, "\(error.message) (at step \(t) of the \(plan.pass) pass)")
        }
    }

    /// Waits for the step's messages; inputs are kept for later steps, results merged at once.
    private func receive(_ pending: ExchangePending, _ transfers: [Plan.Transfer]) throws {
        let start = Date()
        let payloads = try communicator.wait(pending, rank: rank)
        statistics.waitSeconds += Date().timeIntervalSince(start)
        let merge = Date()
        for (transfer, payload) in zip(transfers, payloads) {
            statistics.bytesReceived += payload.reduce(0) { $0 + $1.byteCount }
            try deliver(transfer, payload)
        }
        statistics.computeSeconds += Date().timeIntervalSince(merge)
    }

    private var extraBytes: Int {
        inputs.values.joined().reduce(0) { $0 + $1.byteCount } + results.values.joined().reduce(0) { $0 + $1.byteCount }
    }

    // MARK: Blocks

    private func forward(_ task: Plan.BlockTask) throws {
        let (a, b, rows, heads) = (task.queryShard, task.keyShard, task.rows, task.heads)
        let query = try data(RegionKey(.query, a, rows, heads))[0]
        let kv = try data(RegionKey(.keyValue, b, 0..<plan.layout.count(rank: b), heads))
        let (key, value) = (try expandKeyValue(kv[0], for: heads), try expandKeyValue(kv[1], for: heads))
        let queryPositions = Array(plan.layout.positions(rank: a)[rows])
        let target = RegionKey(.partialOutput, a, rows, heads)
        // The own rows fold in place when the task covers the whole shard (every plan but Ulysses' head slices).
        let whole = a == rank && rows == 0..<plan.layout.count(rank: rank) && heads == 0..<problem.heads
        var (output, logSumExp): (Block, Block)
        if whole {
            (output, logSumExp) = (own.removeValue(forKey: .output)!, own.removeValue(forKey: .logSumExp)!)
        } else if a == rank {
            (output, logSumExp) = (try backend.slice(own[.output]!, tokens(rows, heads)),
                                   try backend.slice(own[.logSumExp]!, stats(rows, heads)))
        } else if let held = results.removeValue(forKey: target) {
            (output, logSumExp) = (held[0], held[1])
        } else {
            (output, logSumExp) = (try backend.filled([problem.batch, rows.count, heads.count, problem.headDim],
                                                      with: 0, like: nil),
                                   try backend.filled([problem.batch, heads.count, rows.count], with: -.infinity, like: nil))
        }
        try backend.forward(query: query, queryPositions: queryPositions, key: key, value: value,
                            keyPositions: plan.layout.positions(rank: b), mask: problem.mask, scale: problem.scale,
                            output: &output, logSumExp: &logSumExp)
        if whole {
            (own[.output], own[.logSumExp]) = (output, logSumExp)
        } else if a == rank {
            try backend.write(output, into: &own[.output]!, at: tokens(rows, heads))
            try backend.write(logSumExp, into: &own[.logSumExp]!, at: stats(rows, heads))
        } else {
            results[target] = [output, logSumExp]
        }
    }

    private func backward(_ task: Plan.BlockTask) throws {
        let (a, b, rows, heads) = (task.queryShard, task.keyShard, task.rows, task.heads)
        let keyRows = 0..<plan.layout.count(rank: b)
        let q = try data(RegionKey(.backwardInputs, a, rows, heads))
        let kv = try data(RegionKey(.keyValue, b, keyRows, heads))
        let (key, value) = (try expandKeyValue(kv[0], for: heads), try expandKeyValue(kv[1], for: heads))
        let delta = try backend.backwardPreprocess(output: q[1], outputGrad: q[2])
        var dq = try backend.filled(q[0].shape, with: 0, like: nil)
        var dk = try backend.filled(key.shape, with: 0, like: nil), dv = try backend.filled(key.shape, with: 0, like: nil)
        try backend.backward(query: q[0], queryPositions: Array(plan.layout.positions(rank: a)[rows]), key: key,
                             value: value, keyPositions: plan.layout.positions(rank: b), mask: problem.mask,
                             scale: problem.scale, outputGrad: q[2], logSumExp: q[3], delta: delta,
                             queryGrad: &dq, keyGrad: &dk, valueGrad: &dv)
        (dk, dv) = (try foldKeyValue(dk, for: heads), try foldKeyValue(dv, for: heads))
        if a == rank {
            try backend.add(dq, into: &own[.queryGrad]!, at: tokens(rows, heads))
        } else {
            try accumulate(RegionKey(.queryGradient, a, rows, heads), [dq])
        }
        if b == rank {
            let kvHeads = problem.keyValueHeads(serving: heads)
            try backend.add(dk, into: &own[.keyGrad]!, at: tokens(keyRows, kvHeads))
            try backend.add(dv, into: &own[.valueGrad]!, at: tokens(keyRows, kvHeads))
        } else {
            try accumulate(RegionKey(.keyValueGradient, b, keyRows, heads), [dk, dv])
        }
    }

    private func accumulate(_ key: RegionKey, _ parts: [Block]) throws {
        guard var sums = results.removeValue(forKey: key) else {
            results[key] = parts
            return
        }
        for (i, part) in parts.enumerated() {
            try backend.add(part, into: &sums[i], at: part.shape.map { 0..<$0 })
        }
        results[key] = sums
    }

    // MARK: Data

    /// The tensors of `region`: from the own shard, or sliced out of a received region that holds it.
    private func data(_ region: RegionKey) throws -> [Block] {
        if region.shard == rank { return try ownData(region) }
        guard let (held, tensors) = inputs.first(where: { $0.key.contains(region) }) else {
            throw DistFlashError(.runtime, "rank \(rank): \(plan): needs \(region), which it never received")
        }
        let rows = region.rows.shifted(by: -held.rows.lowerBound)
        let heads = region.heads.shifted(by: -held.heads.lowerBound)
        let kvHeads = problem.keyValueHeads(serving: region.heads)
            .shifted(by: -problem.keyValueHeads(serving: held.heads).lowerBound)
        switch region.content {
        case .keyValue: return try tensors.map { try sliceUnlessWhole($0, tokens(rows, kvHeads)) }
        case .query: return [try sliceUnlessWhole(tensors[0], tokens(rows, heads))]
        case .backwardInputs:
            return try tensors[0..<3].map { try sliceUnlessWhole($0, tokens(rows, heads)) }
                + [try sliceUnlessWhole(tensors[3], stats(rows, heads))]
        case .partialOutput, .queryGradient, .keyValueGradient:
            throw DistFlashError(.runtime, "rank \(rank): \(region) is a result, not an input")
        }
    }

    private func ownData(_ region: RegionKey) throws -> [Block] {
        let (rows, heads) = (region.rows, region.heads)
        switch region.content {
        case .keyValue:
            let kvHeads = problem.keyValueHeads(serving: heads)
            return try [own[.key]!, own[.value]!].map { try sliceUnlessWhole($0, tokens(rows, kvHeads)) }
        case .query: return [try sliceUnlessWhole(own[.query]!, tokens(rows, heads))]
        case .backwardInputs:
            return try [.query, .output, .outputGrad].map { try sliceUnlessWhole(own[$0]!, tokens(rows, heads)) }
                + [try sliceUnlessWhole(own[.logSumExp]!, stats(rows, heads))]
        case .partialOutput, .queryGradient, .keyValueGradient:
            return []
        }
    }

    /// What a transfer carries: an input (own or forwarded) or a result computed here.
    private func outgoing(_ transfer: Plan.Transfer) throws -> [Block] {
        let region = RegionKey(transfer)
        guard transfer.content.isResult else { return try data(region) }
        guard let payload = results.removeValue(forKey: region) else {
            throw DistFlashError(.runtime, "rank \(rank): \(plan): has no \(region) to send to rank \(transfer.to)")
        }
        return payload
    }

    /// Stores an input, or merges a result into the own accumulators.
    private func deliver(_ transfer: Plan.Transfer, _ payload: [Block]) throws {
        let (rows, heads) = (transfer.rows, transfer.heads)
        switch transfer.content {
        case .keyValue, .query, .backwardInputs:
            inputs[RegionKey(transfer)] = payload
        case .partialOutput:
            var output = try backend.slice(own[.output]!, tokens(rows, heads))
            var logSumExp = try backend.slice(own[.logSumExp]!, stats(rows, heads))
            try backend.merge(output: &output, logSumExp: &logSumExp, otherOutput: payload[0], otherLogSumExp: payload[1])
            try backend.write(output, into: &own[.output]!, at: tokens(rows, heads))
            try backend.write(logSumExp, into: &own[.logSumExp]!, at: stats(rows, heads))
        case .queryGradient:
            try backend.add(payload[0], into: &own[.queryGrad]!, at: tokens(rows, heads))
        case .keyValueGradient:
            let kvHeads = problem.keyValueHeads(serving: heads)
            try backend.add(payload[0], into: &own[.keyGrad]!, at: tokens(rows, kvHeads))
            try backend.add(payload[1], into: &own[.valueGrad]!, at: tokens(rows, kvHeads))
        }
    }

    /// For each input region this rank receives, the last step that reads it (a block or an onward send), so it
    /// can be dropped after that step.
    private func planLastUses() {
        var needs: [(RegionKey, Int)] = []
        for (t, step) in plan.steps.enumerated() {
            for task in step.tasks where task.rank == rank {
                let queryContent: Plan.Transfer.Content = plan.pass == .forward ? .query : .backwardInputs
                needs.append((RegionKey(queryContent, task.queryShard, task.rows, task.heads), t))
                needs.append((RegionKey(.keyValue, task.keyShard, 0..<plan.layout.count(rank: task.keyShard), task.heads), t))
            }
            for transfer in step.transfers where transfer.from == rank && !transfer.content.isResult {
                needs.append((RegionKey(transfer), t))
            }
        }
        for step in plan.steps {
            for transfer in step.transfers where transfer.to == rank && !transfer.content.isResult {
                let key = RegionKey(transfer)
                lastUse[key] = needs.filter { key.contains($0.0) }.map(\.1).max() ?? transfer.consumedAt
            }
        }
    }

    // MARK: Shapes

    private func tokens(_ rows: Range<Int>, _ heads: Range<Int>) -> [Range<Int>] {
        [0..<problem.batch, rows, heads, 0..<problem.headDim]
    }

    private func stats(_ rows: Range<Int>, _ heads: Range<Int>) -> [Range<Int>] { [0..<problem.batch, heads, rows] }

    /// K or V `[B, n, kv heads serving heads, D]` arranged for query heads `heads`: as is when `heads` covers whole
    /// GQA groups (query head i then reads key/value head i / group), else one key/value head per query head.
    private func expandKeyValue(_ kv: Block, for heads: Range<Int>) throws -> Block {
        let group = problem.group
        if heads.lowerBound % group == 0 && heads.count % group == 0 { return kv }
        let first = problem.keyValueHeads(serving: heads).lowerBound
        let (b, n, d) = (kv.shape[0], kv.shape[1], kv.shape[3])
        var out = try backend.filled([b, n, heads.count, d], with: 0, like: kv)
        for (i, h) in heads.enumerated() {
            let source = h / group - first
            try backend.write(try backend.slice(kv, [0..<b, 0..<n, source..<source + 1, 0..<d]), into: &out,
                              at: [0..<b, 0..<n, i..<i + 1, 0..<d])
        }
        return out
    }

    /// The inverse for gradients: sums per-query-head dK/dV back onto the key/value heads.
    private func foldKeyValue(_ grad: Block, for heads: Range<Int>) throws -> Block {
        let group = problem.group
        if heads.lowerBound % group == 0 && heads.count % group == 0 { return grad }
        let kvHeads = problem.keyValueHeads(serving: heads)
        let (b, n, d) = (grad.shape[0], grad.shape[1], grad.shape[3])
        var out = try backend.filled([b, n, kvHeads.count, d], with: 0, like: nil)
        for (i, h) in heads.enumerated() {
            let target = h / group - kvHeads.lowerBound
            try backend.add(try backend.slice(grad, [0..<b, 0..<n, i..<i + 1, 0..<d]), into: &out,
                            at: [0..<b, 0..<n, target..<target + 1, 0..<d])
        }
        return out
    }

    /// `block[ranges]`, or `block` itself when the ranges cover all of it (no copy).
    private func sliceUnlessWhole(_ block: Block, _ ranges: [Range<Int>]) throws -> Block {
        zip(ranges, block.shape).allSatisfy({ $0 == 0..<$1 }) ? block : try backend.slice(block, ranges)
    }
}

extension Range where Bound == Int {
    func shifted(by offset: Int) -> Range<Int> { (lowerBound + offset)..<(upperBound + offset) }
}
