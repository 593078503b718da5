import DistFlashAttn
import DistFlashAttnCPU
import Synchronization

/// Attention on one device over a shard that holds the whole sequence (in any order): the backend's block
/// primitives applied to one block of queries against the same tokens as keys, the mask decided from the global
/// positions. Scale 1/√D unless given.
public final class LocalAttention: AttentionOperator {
    public let backend: any AttentionBackend
    public let mask: AttentionMask
    public let scale: Float?
    private let forwards = Atomic<Int>(0)
    private let backwards = Atomic<Int>(0)

    public init(backend: any AttentionBackend = CPUBackend(), mask: AttentionMask = .causal, scale: Float? = nil) {
        (self.backend, self.mask, self.scale) = (backend, mask, scale)
    }

    public var forwardCalls: Int { forwards.load(ordering: .relaxed) }
    public var backwardCalls: Int { backwards.load(ordering: .relaxed) }

    public func forward(query: Tensor, key: Tensor, value: Tensor, positions: [Int]) throws -> AttentionPartial {
        forwards.add(1, ordering: .relaxed)
        let geometry = try BlockGeometry(query: query, key: key, value: value, queryPositions: positions,
                                         keyPositions: positions)
        var result = AttentionPartial.empty(batch: geometry.batch, sequence: geometry.queries, heads: geometry.heads,
                                            headDim: geometry.dim)
        try backend.forward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                            mask: mask, scale: scale(geometry), into: &result)
        return result
    }

    public func backward(query: Tensor, key: Tensor, value: Tensor, positions: [Int], result: AttentionPartial,
                         outputGrad: Tensor) throws -> AttentionGradients {
        backwards.add(1, ordering: .relaxed)
        let geometry = try BlockGeometry(query: query, key: key, value: value, queryPositions: positions,
                                         keyPositions: positions)
        let delta = try backend.backwardPreprocess(output: result.output, outputGrad: outputGrad)
        var grads = AttentionGradients.zeros(queryShape: query.shape, keyValueShape: key.shape)
        try backend.backward(query: query, queryPositions: positions, key: key, value: value, keyPositions: positions,
                             mask: mask, scale: scale(geometry), outputGrad: outputGrad,
                             logSumExp: result.logSumExp, delta: delta, into: &grads)
        return grads
    }

    private func scale(_ geometry: BlockGeometry) -> Float { scale ?? 1 / Float(geometry.dim).squareRoot() }
}
