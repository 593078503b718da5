import DistFlashAttn
#if canImport(Glibc)
import Glibc
#endif

/// The tensor-core instructions of the attention kernels (forward and backward).
public enum TensorCoreInstructions: String, Sendable {
    /// Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a only).
    case wgmma
    /// Warp-level `mma.sync` (sm_80 and later).
    case mmaSync = "mma"

    /// The fastest this card runs: wgmma on compute capability 9.x, else mma.sync. `DISTFLASH_CUDA_KERNEL=mma`
    /// forces mma.sync.
    public static func best(for device: CUDADevice) -> Self {
        let forced = getenv("DISTFLASH_CUDA_KERNEL").map { String(cString: $0) }
        return device.capability.major == 9 && forced != "mma" ? .wgmma : .mmaSync
    }
}

/// The attention kernels of one GPU and how to launch them: which kernel serves a head dimension, its grid, its
/// shared memory, and the per-tile bounds it reads.
struct AttentionKernels: Sendable {
    let device: CUDADevice
    /// Warps per thread block of the SIMT kernels.
    let warps = 4
    let instructions: TensorCoreInstructions
    /// The sources for this backend's input type (bf16 or fp16: one module each, same kernel names).
    let simtSource: String
    let forwardSource: String
    let backwardSource: String

    static let simt = KernelSource.splicing(PackageResources.attention_simt_cu)
    static let forward: [TensorCoreInstructions: String] = [
        .mmaSync: KernelSource.splicing(PackageResources.attention_forward_mma_cu),
        .wgmma: KernelSource.splicing(PackageResources.attention_forward_wgmma_cu),
    ]
    static let backward: [TensorCoreInstructions: String] = [
        .mmaSync: KernelSource.splicing(PackageResources.attention_backward_mma_cu),
        .wgmma: KernelSource.splicing(PackageResources.attention_backward_wgmma_cu),
    ]

    /// `instructions`: the tensor-core kernels' (nil: the best for the card).
    init(device: CUDADevice, inputs: DeviceTensor.Precision, instructions: TensorCoreInstructions? = nil) {
        self.device = device
        self.instructions = instructions ?? .best(for: device)
        (simtSource, forwardSource, backwardSource) = (KernelSource.forInputs(Self.simt, inputs),
                                                       KernelSource.forInputs(Self.forward[self.instructions]!, inputs),
                                                       KernelSource.forInputs(Self.backward[self.instructions]!, inputs))
    }

    /// Whether the forward and backward run on tensor cores for head dimension `headDim` (D ∈ {64, 128}; P, dS
    /// and dO then enter the mma in the input type). `DISTFLASH_CUDA_KERNEL=simt` forces the SIMT kernels.
    func usesTensorCores(headDim: Int) -> Bool { Self.usesTensorCores(headDim: headDim) }

    static func usesTensorCores(headDim: Int) -> Bool {
        (headDim == 64 || headDim == 128) && getenv("DISTFLASH_CUDA_KERNEL").map { String(cString: $0) } != "simt"
    }

    func maskArguments(_ mask: AttentionMask) -> [CUDADevice.Argument] {
        switch mask.kind {
        case .causal: return [.int(0), .int(0)]
        case .full: return [.int(1), .int(0)]
        case .window(let w): return [.int(2), .int(Int32(w))]
        }
    }

    /// Global positions and document ids of the query and key rows of one block, as int32 device arrays, with the
    /// kernel launches built on them (made on first use, then reused: they depend only on these rows).
    final class TokenBuffers: @unchecked Sendable {
        // Invariant: `forwardLaunch` and `backwardLaunch` are set at most once each, by the thread that owns the
        // cache entry's device work (callers serialise per device).
        let buffers: [DeviceBuffer]
        private var forwardLaunch: ForwardLaunch?
        private var backwardLaunch: BackwardLaunch?

        init(_ device: CUDADevice, _ mask: AttentionMask, _ queries: [Int], _ keys: [Int]) throws {
            buffers = [try .upload(device, queries.map { Int32($0) }), try .upload(device, keys.map { Int32($0) }),
                       try .upload(device, mask.documentIndices(of: queries)),
                       try .upload(device, mask.documentIndices(of: keys))]
        }

        var arguments: [CUDADevice.Argument] { buffers.map { .pointer($0.address) } }

        func forward(_ kernels: AttentionKernels, queries: Int, keys: Int, heads: Int, batch: Int, dim: Int) throws
            -> ForwardLaunch {
            if let launch = forwardLaunch, launch.fits(queries: queries, heads: heads, batch: batch, dim: dim,
                                                       tensorCores: kernels.usesTensorCores(headDim: dim)) {
                return launch
            }
            let launch = try kernels.forwardLaunch(queries: queries, keys: keys, heads: heads, batch: batch, dim: dim,
                                                   tokens: self)
            forwardLaunch = launch
            return launch
        }

        func backward(_ kernels: AttentionKernels, queries: Int, keys: Int, heads: Int, kvHeads: Int, batch: Int,
                      dim: Int) throws -> BackwardLaunch {
            if let launch = backwardLaunch, launch.grid.1 == kernels.backwardRows(heads: heads, kvHeads: kvHeads),
               launch.grid.2 == batch, launch.dim == dim, kernels.usesTensorCores(headDim: dim) {
                return launch
            }
            let launch = try kernels.backwardLaunch(queries: queries, keys: keys, heads: heads, kvHeads: kvHeads,
                                                    batch: batch, dim: dim, tokens: self)
            backwardLaunch = launch
            return launch
        }
    }

    /// The forward kernel for head dimension `dim`, ready to launch. The tensor-core kernels take 128 query rows
    /// per block (wgmma: two warpgroups, 128-key tiles; mma.sync: 4 warps) and need the bounds of each key tile,
    /// computed here first; the SIMT kernel takes one row per warp.
    func forwardLaunch(queries: Int, keys: Int, heads: Int, batch: Int, dim: Int, tokens: TokenBuffers) throws
        -> ForwardLaunch {
        guard usesTensorCores(headDim: dim) else {
            return ForwardLaunch(kernel: try device.kernel("attention_forward", source: simtSource), wholeKernel: nil,
                                 grid: ((queries + warps - 1) / warps, heads, batch), block: 32 * warps,
                                 sharedBytes: 0, keyBounds: nil, rowsPerBlock: warps, keyTile: 1, dim: dim,
                                 tensorCores: false, tensorMaps: false)
        }
        // The lab's winners (lab/results). wgmma: a producer warpgroup loading by TMA and two consumers, 128-key
        // tiles; mma.sync: D=128 with 64-key tiles, D=64 with 128-key tiles.
        let mmaTile = dim == 128 ? 64 : 128
        let (name, rows, keyTile, threads, sharedBytes) = switch instructions {
        case .wgmma: ("attention_forward_wgmma_d\(dim)", 128, 128, 384, (128 + 4 * 128) * dim * 2 + 1024)
        case .mmaSync: ("attention_forward_mma_d\(dim)_w4_m2_n\(mmaTile)", 128, mmaTile, 128,
                        (128 + 2 * mmaTile) * (dim + 8) * 2)
        }
        let kernel = try device.kernel(name, source: forwardSource)
        try device.allowSharedMemory(kernel, bytes: sharedBytes)
        let wholeKernel = instructions == .wgmma
            ? try device.kernel("attention_forward_wgmma_fresh_d\(dim)", source: forwardSource) : nil
        if let wholeKernel { try device.allowSharedMemory(wholeKernel, bytes: sharedBytes) }
        let tiles = (keys + keyTile - 1) / keyTile
        let bounds = try DeviceBuffer(device, bytes: 16 * tiles)
        try device.launch(try device.kernel("attention_tile_bounds", source: forwardSource),
                          grid: ((tiles + 127) / 128, 1, 1), block: 128,
                          [tokens.arguments[1], tokens.arguments[3], .int(Int32(keys)), .int(Int32(keyTile)),
                           .pointer(bounds.address)])
        return ForwardLaunch(kernel: kernel, wholeKernel: wholeKernel, grid: ((queries + rows - 1) / rows, heads, batch),
                             block: threads,
                             sharedBytes: sharedBytes, keyBounds: bounds, rowsPerBlock: rows, keyTile: keyTile, dim: dim,
                             tensorCores: true, tensorMaps: instructions == .wgmma)
    }

    /// One forward launch: the kernel, its shape, and the key-tile bounds it reads (kept alive with it).
    struct ForwardLaunch {
        let kernel: OpaquePointer?
        /// wgmma: the same kernel writing O in the input type when its keys are all the keys (no partial to fold
        /// into); nil elsewhere.
        let wholeKernel: OpaquePointer?
        let grid: (Int, Int, Int)
        let block: Int
        let sharedBytes: Int
        let keyBounds: DeviceBuffer?
        let rowsPerBlock: Int
        /// Keys per tile of the tensor-core kernels.
        let keyTile: Int
        let dim: Int
        let tensorCores: Bool
        /// Whether the kernel reads Q, K and V through tensor maps (TMA) rather than pointers.
        let tensorMaps: Bool

        /// The kernel's first three arguments: Q [B, Sq, H, D], K and V [B, Sk, H_kv, D], as pointers or as tensor
        /// maps with boxes of the kernel's query rows (Q) and key tiles (K, V).
        func inputArguments(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor) throws -> [CUDADevice.Argument] {
            guard tensorMaps else { return [query, key, value].map { .pointer($0.address) } }
            return [.tensorMap(try TensorMap(query, rows: rowsPerBlock)), .tensorMap(try TensorMap(key, rows: keyTile)),
                    .tensorMap(try TensorMap(value, rows: keyTile))]
        }

        /// Arguments the tensor-core kernel takes after the token arrays.
        var extraArguments: [CUDADevice.Argument] { keyBounds.map { [.pointer($0.address)] } ?? [] }

        /// Whether this launch serves a call of these sizes.
        func fits(queries: Int, heads: Int, batch: Int, dim: Int, tensorCores: Bool) -> Bool {
            grid == ((queries + rowsPerBlock - 1) / rowsPerBlock, heads, batch) && self.dim == dim
                && self.tensorCores == tensorCores
        }

        func run(_ device: CUDADevice, _ arguments: [CUDADevice.Argument], whole: Bool = false) throws {
            try device.launch(whole ? wholeKernel : kernel, grid: grid, block: block, sharedBytes: sharedBytes, arguments)
        }
    }

    /// Where the backward writes dQ rotated back by RoPE: device addresses of the bf16 output matrix (row b·S + i
    /// for query row i of batch b, `stride` elements apart, the heads from column `column` on) and of the cos and
    /// sin tables `[S, D/2]`.
    struct RotatedQueryGrad {
        let output: UInt64, cosines: UInt64, sines: UInt64
        let stride: Int, column: Int
    }

    /// What the backward does with dQ: add it into the fp32 tensor at an address, write it there (its memory need
    /// not be filled before; only where `BackwardLaunch.setsQueryGrad`), or write it rotated back by RoPE in bf16
    /// columns of a wider matrix (wgmma only).
    enum QueryGradOutput {
        case add(UInt64), set(UInt64), rotated(RotatedQueryGrad)
    }

    /// Launches the backward kernel(s) for dQ (`queryGrad`), dK, dV (added into): `tensorCore` (from
    /// `backwardLaunch`, for D ∈ {64, 128}) or else the SIMT pair. `inputs`: Q, K, V, dO, LSE, δ and the token
    /// arrays; `sizes`: the trailing scalars.
    func runBackward(_ tensorCore: BackwardLaunch?, queries: Int, keys: Int, heads: Int, kvHeads: Int, batch: Int,
                     inputs: [CUDADevice.Argument], queryGrad: QueryGradOutput,
                     gradients: (key: UInt64, value: UInt64), sizes: [CUDADevice.Argument]) throws {
        let (dk, dv) = gradients
        if let tensorCore, let add = tensorCore.dqTiles, let set = tensorCore.dqSetFromTiles,
           let rotate = tensorCore.dqRotatedFromTiles {
            // wgmma: dQ by bulk reductions into a zeroed tile-laid-out buffer, then one conversion into its place.
            guard batch * queries * heads < Int(Int32.max) else {
                throw DistFlashError(.shapeMismatch, "B·S·H = \(batch * queries * heads): the wgmma backward needs "
                    + "B·S·H < 2³¹")
            }
            let count = batch * heads * ((queries + tensorCore.queryTile - 1) / tensorCore.queryTile)
                * tensorCore.queryTile * tensorCore.dim
            let tiles = try DeviceBuffer(device, bytes: 4 * count)
            try tiles.fill32(0, count: count)
            try tensorCore.run(device, inputs + tensorCore.boundArguments
                + [.pointer(tiles.address), .pointer(dk), .pointer(dv)] + sizes)
            let shape: [CUDADevice.Argument] = [.int(Int32(queries)), .int(Int32(heads)), .int(Int32(batch))]
            func aligned(_ dq: UInt64) throws -> CUDADevice.Argument {
                guard dq % 16 == 0 else {
                    throw DistFlashError(.shapeMismatch, "dQ at address \(dq): the wgmma backward needs it 16-byte "
                        + "aligned")
                }
                return .pointer(dq)
            }
            let (kernel, perThread, arguments): (OpaquePointer?, Int, [CUDADevice.Argument])
            switch queryGrad {
            case .add(let dq): (kernel, perThread, arguments) = (add, 4, [try aligned(dq)] + shape)
            case .set(let dq): (kernel, perThread, arguments) = (set, 4, [try aligned(dq)] + shape)
            case .rotated(let r):  // four pairs, eight elements, a thread
                (kernel, perThread, arguments) = (rotate, 8, [.pointer(r.output), .pointer(r.cosines),
                                                              .pointer(r.sines)]
                                                    + shape + [.int(Int32(r.stride)), .int(Int32(r.column))])
            }
            let threads = batch * queries * heads * tensorCore.dim / perThread
            try device.launch(kernel, grid: (min((threads + 255) / 256, 65_535), 1, 1), block: 256,
                              [.pointer(tiles.address)] + arguments)
            return  // the buffer's free is queued on the stream after both launches
        }
        let dq: UInt64
        switch queryGrad {
        case .add(let address), .set(let address): dq = address  // set only where the launch sets: never here
        case .rotated:
            throw DistFlashError(.invalidProblem, "dQ rotated into a wider matrix needs the wgmma backward (an "
                + "sm_90 GPU, D ∈ {64, 128})")
        }
        if let tensorCore {
            try tensorCore.run(device, inputs + tensorCore.boundArguments
                + [.pointer(dq), .pointer(dk), .pointer(dv)] + sizes)
            return
        }
        try device.launch(try device.kernel("attention_backward_dkdv", source: simtSource),
                          grid: ((keys + warps - 1) / warps, kvHeads, batch), block: 32 * warps,
                          inputs + [.pointer(dk), .pointer(dv)] + sizes)
        try device.launch(try device.kernel("attention_backward_dq", source: simtSource),
                          grid: ((queries + warps - 1) / warps, heads, batch), block: 32 * warps,
                          inputs + [.pointer(dq)] + sizes)
    }

    /// The tensor-core backward for head dimension `dim` (64 or 128), ready to launch: one block per 128 keys and
    /// row of `backwardRows` (wgmma: a producer warpgroup loading by TMA and two consumers, walking 128-row query
    /// tiles at D = 64 and 64-row ones at D = 128; mma.sync: 8 warps, the lab's winner over 4, 64-row query tiles:
    /// lab/results); the bounds of each query tile and of each 128-row key tile are computed here.
    func backwardLaunch(queries: Int, keys: Int, heads: Int, kvHeads: Int, batch: Int, dim: Int,
                        tokens: TokenBuffers) throws -> BackwardLaunch {
        let keyTile = 128, queryTile = instructions == .wgmma && dim == 64 ? 128 : 64
        let (name, threads, sharedBytes) = switch instructions {
        case .wgmma: ("attention_backward_wgmma_d\(dim)", 384,
                      (2 * keyTile + 4 * queryTile) * dim * 2 + 2 * keyTile * queryTile * 2 + 4 * queryTile * 4
                          + 4 * queryTile * dim  // the two consumers' staged dQ halves
                          + 1024 + (dim == 64 ? keyTile * dim * 2 : 0))  // swizzle alignment; K's copy for dQ
        case .mmaSync: ("attention_backward_mma_d\(dim)_w8", 256,
                        (2 * keyTile + 2 * queryTile) * (dim + 8) * 2 + keyTile * (queryTile + 8) * 2 + 2 * queryTile * 4)
        }
        let kernel = try device.kernel(name, source: backwardSource)
        try device.allowSharedMemory(kernel, bytes: sharedBytes)
        let boundsKernel = try device.kernel("attention_tile_bounds", source: backwardSource)
        var bounds: [DeviceBuffer] = []
        for (rows, tile, position, document) in [(queries, queryTile, 0, 2), (keys, keyTile, 1, 3)] {
            let tiles = (rows + tile - 1) / tile
            let buffer = try DeviceBuffer(device, bytes: 16 * tiles)
            try device.launch(boundsKernel, grid: ((tiles + 127) / 128, 1, 1), block: 128,
                              [tokens.arguments[position], tokens.arguments[document], .int(Int32(rows)),
                               .int(Int32(tile)), .pointer(buffer.address)])
            bounds.append(buffer)
        }
        let rows = backwardRows(heads: heads, kvHeads: kvHeads)
        let wgmma = instructions == .wgmma
        let tileKernel = { (name: String) in
            wgmma ? try self.device.kernel("\(name)_d\(dim)", source: self.backwardSource) : nil
        }
        return BackwardLaunch(kernel: kernel, grid: ((keys + keyTile - 1) / keyTile, rows, batch), block: threads,
                              sharedBytes: sharedBytes, bounds: bounds, dim: dim, queryTile: queryTile,
                              tensorMaps: wgmma, dqTiles: try tileKernel("attention_dq_from_tiles"),
                              dqSetFromTiles: try tileKernel("attention_dq_set_from_tiles"),
                              dqRotatedFromTiles: try tileKernel("attention_dq_rotated_from_tiles"))
    }

    /// The backward's rows of blocks: one per key/value head (a block walks the group's query heads, summing dK and
    /// dV in registers), or under GQA on wgmma one per query head (dK and dV added by reductions), so the blocks
    /// running at once share one head's Q, dO and dQ in L2 rather than a group's (lab v18).
    func backwardRows(heads: Int, kvHeads: Int) -> Int {
        instructions == .wgmma ? heads : kvHeads
    }

    /// One tensor-core backward launch and the tile bounds it reads (query tiles, key tiles).
    struct BackwardLaunch {
        let kernel: OpaquePointer?
        let grid: (Int, Int, Int)
        let block: Int
        let sharedBytes: Int
        let bounds: [DeviceBuffer]
        let dim: Int
        let queryTile: Int
        /// Whether the kernel reads Q and dO through tensor maps (TMA) rather than pointers.
        let tensorMaps: Bool
        /// wgmma: the kernel adding the backward's tile-laid-out dQ into dQ (the backward takes that buffer in
        /// dQ's place), and the one writing it there instead; nil when the backward adds into dQ itself.
        let dqTiles: OpaquePointer?
        let dqSetFromTiles: OpaquePointer?
        /// wgmma: the kernel writing dQ rotated back by RoPE, in bf16, into columns of a wider matrix.
        let dqRotatedFromTiles: OpaquePointer?

        /// Whether dQ can be written rather than added into (so its memory need not be filled first).
        var setsQueryGrad: Bool { dqSetFromTiles != nil }

        /// The kernel's first four arguments: Q and dO [B, Sq, H, D], K and V [B, Sk, H_kv, D], as pointers, or Q
        /// and dO as tensor maps with boxes of the kernel's query tiles.
        func inputArguments(query: DeviceTensor, key: DeviceTensor, value: DeviceTensor, outputGrad: DeviceTensor)
            throws -> [CUDADevice.Argument] {
            guard tensorMaps else { return [query, key, value, outputGrad].map { .pointer($0.address) } }
            return [.tensorMap(try TensorMap(query, rows: queryTile)), .pointer(key.address), .pointer(value.address),
                    .tensorMap(try TensorMap(outputGrad, rows: queryTile))]
        }

        var boundArguments: [CUDADevice.Argument] { bounds.map { .pointer($0.address) } }

        func run(_ device: CUDADevice, _ arguments: [CUDADevice.Argument]) throws {
            try device.launch(kernel, grid: grid, block: block, sharedBytes: sharedBytes, arguments)
        }
    }
}
