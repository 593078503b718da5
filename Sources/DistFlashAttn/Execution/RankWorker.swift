import Foundation

/// The tensors one rank holds for its own shard.
enum ShardTensor: Hashable, Sendable {
    /// Inputs: Q, O, dO `[B, n, H, D]`, K, V `[B, n, H_kv, D]`, LSE `[B, H, n]`.
    case query, key, value, output, outputGrad, logSumExp
    /// Backward results: dQ `[B, n, H, D]`, dK, dV `[B, n, H_kv, D]`.
    case queryGrad, keyGrad, valueGrad
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
/// token count under the plan's layout.
final class RankWorker {
    let rank: Int
    let plan: Plan
    let problem: AttentionProblem
    let backend: any AttentionBackend
    let communicator: any Communicator
    let overlap: Bool
    /// Step at which this rank throws on purpose (tests of failure handling).
    let failAt: Int?

    /// Own shards: Q, K, V and, backward, O, dO, LSE.
    private var own: [ShardTensor: Tensor]
    /// Received inputs, by region, and the last step that uses each.
    private var inputs: [RegionKey: [Tensor]] = [:]
    private var lastUse: [RegionKey: Int] = [:]
    /// Results for other ranks' shards, by the region of the transfer that returns them.
    private var results: [RegionKey: [Tensor]] = [:]
    private(set) var statistics = RankStatistics()

    init(rank: Int, plan: Plan, problem: AttentionProblem, backend: any AttentionBackend,
         communicator: any Communicator, overlap: Bool, failAt: Int?, own: [ShardTensor: Tensor]) {
        (self.rank, self.plan, self.problem, self.backend) = (rank, plan, problem, backend)
        (self.communicator, self.overlap, self.failAt, self.own) = (communicator, overlap, failAt, own)
        planLastUses()
    }

    // MARK: The loop

    /// Runs every step; returns the own accumulators: forward .output, .logSumExp; backward .queryGrad, .keyGrad, .valueGrad.
    func run() throws -> [ShardTensor: Tensor] {
        let n = plan.layout.count(rank: rank)
        let (b, h, hkv, d) = (problem.batch, problem.heads, problem.kvHeads, problem.headDim)
        if plan.pass == .forward {
            own[.output] = Tensor(shape: [b, n, h, d])
            own[.logSumExp] = Tensor(shape: [b, h, n], repeating: -.infinity)
        } else {
            own[.queryGrad] = Tensor(shape: [b, n, h, d])
            own[.keyGrad] = Tensor(shape: [b, n, hkv, d])
            own[.valueGrad] = Tensor(shape: [b, n, hkv, d])
        }
        var tag = 0
        for (t, step) in plan.steps.enumerated() {
            if failAt == t {
                throw DistFlashError(.runtime, "rank \(rank): failure injected at step \(t)")
            }
            let tags = tag..<tag + step.transfers.count
            tag = tags.upperBound
            var exchange = Exchange()
            var incoming: [Plan.Transfer] = []
            for (i, transfer) in step.transfers.enumerated() {
                if transfer.from == rank {
                    let payload = try outgoing(transfer)
                    exchange.sends.append(.init(to: transfer.to, tag: tags.lowerBound + i, payload: payload))
                    statistics.bytesSent += payload.reduce(0) { $0 + $1.count } * 4
                } else if transfer.to == rank {
                    exchange.receives.append(.init(from: transfer.from, tag: tags.lowerBound + i,
                                                   shapes: transfer.payloadShapes(problem: problem)))
                    incoming.append(transfer)
                }
            }
            let pending = try communicator.post(exchange, rank: rank)
            if !overlap { try receive(pending, incoming) }
            for task in step.tasks where task.rank == rank {
                let start = Date()
                if plan.pass == .forward { try forward(task) } else { try backward(task) }
                statistics.computeSeconds += Date().timeIntervalSince(start)
            }
            if overlap { try receive(pending, incoming) }
            statistics.peakExtraBytes = max(statistics.peakExtraBytes, extraBytes)
            for (key, last) in lastUse where last <= t { inputs[key] = nil }
        }
        try communicator.barrier(rank: rank)
        return plan.pass == .forward ? [.output: own[.output]!, .logSumExp: own[.logSumExp]!]
            : [.queryGrad: own[.queryGrad]!, .keyGrad: own[.keyGrad]!, .valueGrad: own[.valueGrad]!]
    }

    /// Waits for the step's messages; inputs are kept for later steps, results merged at once.
    private func receive(_ pending: Exchange.Pending, _ transfers: [Plan.Transfer]) throws {
        let start = Date()
        let payloads = try communicator.wait(pending, rank: rank)
        statistics.waitSeconds += Date().timeIntervalSince(start)
        let merge = Date()
        for (transfer, payload) in zip(transfers, payloads) {
            statistics.bytesReceived += payload.reduce(0) { $0 + $1.count } * 4
            try deliver(transfer, payload)
        }
        statistics.computeSeconds += Date().timeIntervalSince(merge)
    }

    private var extraBytes: Int {
        (inputs.values.joined().reduce(0) { $0 + $1.count } + results.values.joined().reduce(0) { $0 + $1.count }) * 4
    }

    // MARK: Blocks

    private func forward(_ task: Plan.BlockTask) throws {
        let (a, b, rows, heads) = (task.queryShard, task.keyShard, task.rows, task.heads)
        let query = try data(RegionKey(.query, a, rows, heads))[0]
        let kv = try data(RegionKey(.keyValue, b, 0..<plan.layout.count(rank: b), heads))
        let (key, value) = (expandKeyValue(kv[0], for: heads), expandKeyValue(kv[1], for: heads))
        let queryPositions = Array(plan.layout.positions(rank: a)[rows])
        let target = RegionKey(.partialOutput, a, rows, heads)
        var partial = a == rank
            ? AttentionPartial(output: own[.output]!.block(tokens(rows, heads)), logSumExp: own[.logSumExp]!.block(stats(rows, heads)))
            : results[target].map { AttentionPartial(output: $0[0], logSumExp: $0[1]) }
                ?? .empty(batch: problem.batch, sequence: rows.count, heads: heads.count, headDim: problem.headDim)
        try backend.forward(query: query, queryPositions: queryPositions, key: key, value: value,
                            keyPositions: plan.layout.positions(rank: b), mask: problem.mask, scale: problem.scale,
                            into: &partial)
        if a == rank {
            own[.output]!.setBlock(tokens(rows, heads), to: partial.output)
            own[.logSumExp]!.setBlock(stats(rows, heads), to: partial.logSumExp)
        } else {
            results[target] = [partial.output, partial.logSumExp]
        }
    }

    private func backward(_ task: Plan.BlockTask) throws {
        let (a, b, rows, heads) = (task.queryShard, task.keyShard, task.rows, task.heads)
        let keyRows = 0..<plan.layout.count(rank: b)
        let q = try data(RegionKey(.backwardInputs, a, rows, heads))
        let kv = try data(RegionKey(.keyValue, b, keyRows, heads))
        let (key, value) = (expandKeyValue(kv[0], for: heads), expandKeyValue(kv[1], for: heads))
        let delta = try backend.backwardPreprocess(output: q[1], outputGrad: q[2])
        var grads = AttentionGradients.zeros(queryShape: q[0].shape, keyValueShape: key.shape)
        try backend.backward(query: q[0], queryPositions: Array(plan.layout.positions(rank: a)[rows]), key: key,
                             value: value, keyPositions: plan.layout.positions(rank: b), mask: problem.mask,
                             scale: problem.scale, outputGrad: q[2], logSumExp: q[3], delta: delta, into: &grads)
        let (dk, dv) = (foldKeyValue(grads.key, for: heads), foldKeyValue(grads.value, for: heads))
        if a == rank {
            own[.queryGrad]!.addBlock(tokens(rows, heads), grads.query)
        } else {
            accumulate(RegionKey(.queryGradient, a, rows, heads), [grads.query])
        }
        if b == rank {
            let kvHeads = problem.keyValueHeads(serving: heads)
            own[.keyGrad]!.addBlock(tokens(keyRows, kvHeads), dk)
            own[.valueGrad]!.addBlock(tokens(keyRows, kvHeads), dv)
        } else {
            accumulate(RegionKey(.keyValueGradient, b, keyRows, heads), [dk, dv])
        }
    }

    private func accumulate(_ key: RegionKey, _ parts: [Tensor]) {
        guard var sums = results[key] else {
            results[key] = parts
            return
        }
        for (i, part) in parts.enumerated() {
            sums[i].addBlock(part.shape.map { 0..<$0 }, part)
        }
        results[key] = sums
    }

    // MARK: Data

    /// The tensors of `region`: from the own shard, or sliced out of a received region that holds it.
    private func data(_ region: RegionKey) throws -> [Tensor] {
        if region.shard == rank { return ownData(region) }
        guard let (held, tensors) = inputs.first(where: { $0.key.contains(region) }) else {
            throw DistFlashError(.runtime, "rank \(rank): \(plan): needs \(region), which it never received")
        }
        let rows = region.rows.shifted(by: -held.rows.lowerBound)
        let heads = region.heads.shifted(by: -held.heads.lowerBound)
        let kvHeads = problem.keyValueHeads(serving: region.heads)
            .shifted(by: -problem.keyValueHeads(serving: held.heads).lowerBound)
        switch region.content {
        case .keyValue: return tensors.map { $0.block(tokens(rows, kvHeads)) }
        case .query: return [tensors[0].block(tokens(rows, heads))]
        case .backwardInputs:
            return tensors[0..<3].map { $0.block(tokens(rows, heads)) } + [tensors[3].block(stats(rows, heads))]
        case .partialOutput, .queryGradient, .keyValueGradient:
            throw DistFlashError(.runtime, "rank \(rank): \(region) is a result, not an input")
        }
    }

    private func ownData(_ region: RegionKey) -> [Tensor] {
        let (rows, heads) = (region.rows, region.heads)
        switch region.content {
        case .keyValue:
            let kvHeads = problem.keyValueHeads(serving: heads)
            return [own[.key]!.block(tokens(rows, kvHeads)), own[.value]!.block(tokens(rows, kvHeads))]
        case .query: return [own[.query]!.block(tokens(rows, heads))]
        case .backwardInputs:
            return [.query, .output, .outputGrad].map { own[$0]!.block(tokens(rows, heads)) } + [own[.logSumExp]!.block(stats(rows, heads))]
        case .partialOutput, .queryGradient, .keyValueGradient:
            return []
        }
    }

    /// What a transfer carries: an input (own or forwarded) or a result computed here.
    private func outgoing(_ transfer: Plan.Transfer) throws -> [Tensor] {
        let region = RegionKey(transfer)
        guard transfer.content.isResult else { return try data(region) }
        guard let payload = results.removeValue(forKey: region) else {
            throw DistFlashError(.runtime, "rank \(rank): \(plan): has no \(region) to send to rank \(transfer.to)")
        }
        return payload
    }

    /// Stores an input, or merges a result into the own accumulators.
    private func deliver(_ transfer: Plan.Transfer, _ payload: [Tensor]) throws {
        let (rows, heads) = (transfer.rows, transfer.heads)
        switch transfer.content {
        case .keyValue, .query, .backwardInputs:
            inputs[RegionKey(transfer)] = payload
        case .partialOutput:
            var mine = AttentionPartial(output: own[.output]!.block(tokens(rows, heads)),
                                        logSumExp: own[.logSumExp]!.block(stats(rows, heads)))
            try backend.merge(&mine, with: AttentionPartial(output: payload[0], logSumExp: payload[1]))
            own[.output]!.setBlock(tokens(rows, heads), to: mine.output)
            own[.logSumExp]!.setBlock(stats(rows, heads), to: mine.logSumExp)
        case .queryGradient:
            own[.queryGrad]!.addBlock(tokens(rows, heads), payload[0])
        case .keyValueGradient:
            let kvHeads = problem.keyValueHeads(serving: heads)
            own[.keyGrad]!.addBlock(tokens(rows, kvHeads), payload[0])
            own[.valueGrad]!.addBlock(tokens(rows, kvHeads), payload[1])
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
    private func expandKeyValue(_ kv: Tensor, for heads: Range<Int>) -> Tensor {
        let group = problem.group
        if heads.lowerBound % group == 0 && heads.count % group == 0 { return kv }
        let first = problem.keyValueHeads(serving: heads).lowerBound
        var out = Tensor(shape: [kv.shape[0], kv.shape[1], heads.count, kv.shape[3]])
        for (i, h) in heads.enumerated() {
            let source = h / group - first
            out.setBlock([0..<kv.shape[0], 0..<kv.shape[1], i..<i + 1, 0..<kv.shape[3]],
                         to: kv.block([0..<kv.shape[0], 0..<kv.shape[1], source..<source + 1, 0..<kv.shape[3]]))
        }
        return out
    }

    /// The inverse for gradients: sums per-query-head dK/dV back onto the key/value heads.
    private func foldKeyValue(_ grad: Tensor, for heads: Range<Int>) -> Tensor {
        let group = problem.group
        if heads.lowerBound % group == 0 && heads.count % group == 0 { return grad }
        let kvHeads = problem.keyValueHeads(serving: heads)
        let (b, n, d) = (grad.shape[0], grad.shape[1], grad.shape[3])
        var out = Tensor(shape: [b, n, kvHeads.count, d])
        for (i, h) in heads.enumerated() {
            let target = h / group - kvHeads.lowerBound
            out.addBlock([0..<b, 0..<n, target..<target + 1, 0..<d], grad.block([0..<b, 0..<n, i..<i + 1, 0..<d]))
        }
        return out
    }
}

extension Range where Bound == Int {
    func shifted(by offset: Int) -> Range<Int> { (lowerBound + offset)..<(upperBound + offset) }
}
