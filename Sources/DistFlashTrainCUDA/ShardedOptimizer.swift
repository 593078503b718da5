import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain

/// One rank's parameters, gradients and ZeRO-1 optimizer shard on its GPU. The master weights and the gradients
/// each live in one flat fp32 buffer of N_pad = ⌈N / P⌉·P elements (the model reads per-tensor views of them);
/// rank r owns the AdamW moments of flat elements r·N_pad/P ..< (r+1)·N_pad/P. One update:
/// ```
/// g_r = reduce-scatter(Σ_ranks G)            this rank's shard of the summed gradient
/// ‖g‖² = Σ_ranks ‖g_r‖²  (all-reduce)         c = min(1, maxNorm / (‖g‖ + 10⁻⁶))
/// θ_r ← AdamW(θ_r, c·g_r)                    one launch; weight decay only on matrices' segments
/// Θ = all-gather(θ_r)                       and the bf16 copy: written beside θ_r by AdamW and all-gathered
///                                            when resident, else dropped (re-rounded on their next use)
/// ```
/// With one rank there is nothing to reduce or gather. Every rank must call `update` together.
public final class ShardedOptimizer: @unchecked Sendable {
    // Invariant: touched only by its rank's thread.
    public let rank: Int
    public let ranks: Int
    public let weights: DeviceWeights
    public let gradients: [DeviceTensor]
    public let hyperparameters: AdamW.Hyperparameters
    public private(set) var step = 0
    private let kernels: TrainingKernels
    private let flatMaster: DeviceTensor
    private let flatGradient: DeviceTensor
    private let layout: EqualShards
    private let m: DeviceTensor
    private let v: DeviceTensor
    /// This rank's shard of the summed gradient (the reduce-scatter's output; with one rank, the gradient itself).
    private let reduced: DeviceTensor
    /// The weight decay of each run of this rank's shard (matrices decayed, norms and padding not).
    private let decay: TrainingKernels.DecaySegments

    /// Rank `rank` of `ranks` over `parameters`, fresh or continuing `resume` (a full state over every flat
    /// index, as a checkpoint stores it: this rank takes its slice). `fp32Only`, `residentBF16`: see
    /// `DeviceWeights` (`resident`).
    public init(_ parameters: Parameters, rank: Int, ranks: Int, hyperparameters: AdamW.Hyperparameters,
                resume: AdamWState? = nil, fp32Only: Set<Int> = [], residentBF16: Bool = true,
                device: CUDADevice) throws {
        try hyperparameters.validate()
        (self.rank, self.ranks, self.hyperparameters) = (rank, ranks, hyperparameters)
        kernels = TrainingKernels(device: device)
        let total = parameters.scalarCount
        let layout = EqualShards(count: total, ranks: ranks)
        let padded = layout.padded
        var flat = parameters.tensors.flatMap(\.scalars)
        flat += [Float](repeating: 0, count: padded - total)
        let flatMaster = try DeviceTensor.upload(try Tensor(shape: [padded], scalars: flat), to: device, as: .float32)
        let zeros = CUDABlocks(device: device, timing: false)  // device-side fills: no host buffers of zeros
        let flatGradient = try zeros.filled([padded], with: 0, like: nil)
        weights = try DeviceWeights(names: parameters.names, flat: flatMaster, shapes: parameters.tensors.map(\.shape),
                                    fp32Only: fp32Only, resident: residentBF16, kernels: kernels)
        let spans = weights.spans  // the gradients lie in their flat buffer as the masters in theirs
        gradients = try zip(spans, parameters.tensors).map { try flatGradient.elements($0, as: $1.shape) }
        (self.flatMaster, self.flatGradient) = (flatMaster, flatGradient)
        let share = layout.share
        self.layout = layout
        if let resume {
            guard resume.shard == 0..<total else {
                throw DistFlashError(.shapeMismatch, "AdamW state over \(resume.shard): resuming needs the full range "
                    + "0..<\(total)")
            }
            // The padded shard: the state's values where they exist, zeros past the last parameter.
            let owned = layout.owned(rank)
            let padding = [Float](repeating: 0, count: share - owned.count)
            m = try DeviceTensor.upload(try Tensor(shape: [share], scalars: Array(resume.m[owned]) + padding),
                                        to: device, as: .float32)
            v = try DeviceTensor.upload(try Tensor(shape: [share], scalars: Array(resume.v[owned]) + padding),
                                        to: device, as: .float32)
            step = resume.step
        } else {
            m = try zeros.filled([share], with: 0, like: nil)
            v = try zeros.filled([share], with: 0, like: nil)
        }
        reduced = ranks > 1 ? try zeros.filled([share], with: 0, like: nil) : flatGradient
        var runs: [(elements: Int, decay: Float)] = []
        for (t, _, local) in layout.segments(rank, spans: spans) {
            let start = runs.reduce(0) { $0 + $1.elements }
            if local.lowerBound > start { runs.append((local.lowerBound - start, 0)) }
            runs.append((local.count, hyperparameters.weightDecay(forTensorOfRank: parameters.tensors[t].shape.count)))
        }
        let covered = runs.reduce(0) { $0 + $1.elements }
        if covered < share { runs.append((share - covered, 0)) }  // padding past the last parameter: zeros stay zeros
        decay = try TrainingKernels.DecaySegments(device: device, runs)
    }

    /// This rank's moments over its flat range (padding dropped): the shards of all ranks, in rank order, gather
    /// into the full state a checkpoint stores.
    public func state() throws -> AdamWState {
        let owned = layout.owned(rank)
        let local = 0..<owned.count
        return try AdamWState(step: step, shard: owned, m: Array(try m.download().scalars[local]),
                              v: Array(try v.download().scalars[local]))
    }

    /// The whole optimizer state on every rank, from every rank's shard over NCCL (all ranks call it together).
    public func gatheredState(_ communicator: NCCLCommunicator) throws -> AdamWState {
        let padded = flatMaster.count
        let zeros = CUDABlocks(device: device, timing: false)
        var moments: [[Float]] = []
        for moment in [m, v] {
            let whole = try zeros.filled([padded], with: 0, like: nil)
            try communicator.allGather(moment, into: whole, rank: rank)
            moments.append(Array(try whole.download().scalars[0..<layout.count]))
        }
        return try AdamWState(step: step, shard: 0..<layout.count, m: moments[0], v: moments[1])
    }

    /// The GPU holding this rank's buffers.
    public var device: CUDADevice { flatMaster.device }

    /// One update at `learningRate`, gradients clipped to global norm `maxNorm`; returns the norm before clipping
    /// (non-finite: nothing was updated). `communicator` is nil with one rank.
    @discardableResult
    public func update(learningRate: Float, maxNorm: Float, communicator: NCCLCommunicator?) throws -> Float {
        let mine = reduced
        if ranks > 1 {
            guard let communicator else {
                throw DistFlashError(.runtime, "rank \(rank): \(ranks) ranks need a communicator for the update")
            }
            try communicator.reduceScatterSum(flatGradient, into: mine, rank: rank)
        }
        var squares = try kernels.sumOfSquares(mine)
        if ranks > 1, let communicator {
            squares = try communicator.allReduceSum([squares], rank: rank, device: device)[0]
        }
        let norm = Float(squares.squareRoot())
        guard norm.isFinite else { return norm }
        let scale = GradientClipping.factor(norm: norm, maxNorm: maxNorm) ?? 1
        step += 1
        let h = hyperparameters
        let shard = layout.shard(rank)
        let copy = try weights.resident.map { try $0.elements(shard, as: [shard.count]) }
        do {
            try kernels.adamW(try flatMaster.elements(shard, as: [shard.count]), gradient: mine, gradientScale: scale,
                              m: m, v: v, bf16Copy: copy, learningRate: learningRate, beta1: h.beta1, beta2: h.beta2,
                              epsilon: h.epsilon, weightDecay: decay, step: step)
            if ranks > 1, let communicator {
                try communicator.allGather(try flatMaster.elements(shard, as: [shard.count]), into: flatMaster,
                                           rank: rank)
                if let copy, let resident = weights.resident {
                    try communicator.allGather(copy, into: resident, rank: rank)
                }
            }
        } catch {
            try? weights.mastersChanged()  // a launch or a gather failed partway: no stale copy survives
            throw error
        }
        try weights.mastersChanged(residentWritten: true)
        return norm
    }
}
