import DistFlashAttn
#if canImport(Glibc)
import Glibc
#endif

/// The CUDA backend: the same block primitives as the CPU backend, computed on one GPU. Q, K and V go to the
/// device as bf16 (so run problems with `dtype: .bf16` for the reference rule to apply); O, LSE, δ and
/// gradients stay fp32. This first version moves host tensors in and out on every call.
public struct CUDABackend: AttentionBackend, Sendable {
    public let device: CUDADevice
    /// Warps per thread block of the SIMT kernels.
    let warps = 4

    public init(device: CUDADevice) { self.device = device }

    static let source = String(decoding: PackageResources.attention_simt_cu, as: UTF8.self)
    private static let tensorCoreSource = KernelSource.splicing(PackageResources.attention_forward_mma_cu)
    private static let backwardSource = KernelSource.splicing(PackageResources.attention_backward_mma_cu)

    /// Whether the forward and backward run on tensor cores for head dimension `headDim` (D ∈ {64, 128}; P, dS
    /// and dO then enter the mma as bf16). `DISTFLASH_CUDA_KERNEL=simt` forces the SIMT reference kernels.
    public func usesTensorCores(headDim: Int) -> Bool {
        (headDim == 64 || headDim == 128) && getenv("DISTFLASH_CUDA_KERNEL").map { String(cString: $0) } != "simt"
    }

    // Each primitive stages its tensors through device memory; threads sharing the device take turns.

    public func forward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                        mask: AttentionMask, scale: Float, into partial: inout AttentionPartial) throws {
        try device.exclusive {
            try forwardOnDevice(query: query, queryPositions: queryPositions, key: key, value: value,
                                keyPositions: keyPositions, mask: mask, scale: scale, into: &partial)
        }
    }

    public func backwardPreprocess(output: Tensor, outputGrad: Tensor) throws -> Tensor {
        try device.exclusive { try backwardPreprocessOnDevice(output: output, outputGrad: outputGrad) }
    }

    public func backward(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                         mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                         into grads: inout AttentionGradients) throws {
        try device.exclusive {
            try backwardOnDevice(query: query, queryPositions: queryPositions, key: key, value: value,
                                 keyPositions: keyPositions, mask: mask, scale: scale, outputGrad: outputGrad,
                                 logSumExp: logSumExp, delta: delta, into: &grads)
        }
    }

    private func forwardOnDevice(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                        mask: AttentionMask, scale: Float, into partial: inout AttentionPartial) throws {
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        try partial.output.requireShape(query.shape, "partial O")
        try partial.logSumExp.requireShape([g.batch, g.heads, g.queries], "partial LSE")
        if g.queries == 0 || g.keys == 0 { return }
        let tokens = try TokenBuffers(device, mask, queryPositions, keyPositions)
        let (q, k, v) = (try bf16(query), try bf16(key), try bf16(value))
        let o = try DeviceBuffer.upload(device, partial.output.scalars)
        let lse = try DeviceBuffer.upload(device, partial.logSumExp.scalars)
        let launch = try forwardLaunch(queries: g.queries, keys: g.keys, heads: g.heads, batch: g.batch, dim: g.dim,
                                       tokens: tokens)
        try launch.run(device, [.pointer(q.address), .pointer(k.address), .pointer(v.address)] + tokens.arguments
                           + launch.extraArguments
                           + [.pointer(o.address), .pointer(lse.address), .int(Int32(g.queries)), .int(Int32(g.keys)),
                              .int(Int32(g.heads)), .int(Int32(g.kvHeads)), .int(Int32(g.dim)), .float(scale)]
                           + maskArguments(mask))
        try device.synchronize()
        // Swift may release a buffer after its last use in code; the kernel uses them until the sync.
        withExtendedLifetime((q, k, v, tokens, launch)) {}
        partial.output.scalars = try o.download(partial.output.count, as: Float.self, initial: 0)
        partial.logSumExp.scalars = try lse.download(partial.logSumExp.count, as: Float.self, initial: 0)
    }

    public func merge(_ partial: inout AttentionPartial, with other: AttentionPartial) throws {
        try other.output.requireShape(partial.output.shape, "merged O")
        try other.logSumExp.requireShape(partial.logSumExp.shape, "merged LSE")
        // Cheap next to attention; done on the host in fp32 like the CPU merge.
        let shape = partial.output.shape
        let (batch, sequence, heads, dim) = (shape[0], shape[1], shape[2], shape[3])
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<sequence {
                    let l = (b * heads + h) * sequence + i
                    let (a, c) = (partial.logSumExp.scalars[l], other.logSumExp.scalars[l])
                    if c == -.infinity { continue }
                    let top = max(a, c)
                    let (wa, wc) = (expf(a - top), expf(c - top))
                    let (fa, fc) = (wa / (wa + wc), wc / (wa + wc))
                    let row = ((b * sequence + i) * heads + h) * dim
                    for d in 0..<dim {
                        let mine: Float = partial.output.scalars[row + d], theirs: Float = other.output.scalars[row + d]
                        partial.output.scalars[row + d] = fa * mine + fc * theirs
                    }
                    partial.logSumExp.scalars[l] = top + logf(wa + wc)
                }
            }
        }
    }

    private func backwardPreprocessOnDevice(output: Tensor, outputGrad: Tensor) throws -> Tensor {
        try outputGrad.requireShape(output.shape, "dO")
        let (batch, sequence, heads, dim) = (output.shape[0], output.shape[1], output.shape[2], output.shape[3])
        let o = try DeviceBuffer.upload(device, output.scalars), dO = try DeviceBuffer.upload(device, outputGrad.scalars)
        let delta = try DeviceBuffer(device, bytes: 4 * batch * heads * sequence)
        if sequence > 0 {
            try device.launch(try device.kernel("attention_backward_preprocess", source: Self.source),
                              grid: ((sequence + warps - 1) / warps, heads, batch), block: 32 * warps,
                              [.pointer(o.address), .pointer(dO.address), .pointer(delta.address),
                               .int(Int32(sequence)), .int(Int32(heads)), .int(Int32(dim))])
            try device.synchronize()
        }
        withExtendedLifetime((o, dO)) {}
        return try Tensor(shape: [batch, heads, sequence],
                          scalars: delta.download(batch * heads * sequence, as: Float.self, initial: 0))
    }

    private func backwardOnDevice(query: Tensor, queryPositions: [Int], key: Tensor, value: Tensor, keyPositions: [Int],
                         mask: AttentionMask, scale: Float, outputGrad: Tensor, logSumExp: Tensor, delta: Tensor,
                         into grads: inout AttentionGradients) throws {
        let g = try geometry(query, key, value, queryPositions, keyPositions)
        try grads.query.requireShape(query.shape, "dQ")
        try grads.key.requireShape(key.shape, "dK")
        try grads.value.requireShape(key.shape, "dV")
        if g.queries == 0 || g.keys == 0 { return }
        let tokens = try TokenBuffers(device, mask, queryPositions, keyPositions)
        let tensorCores = usesTensorCores(headDim: g.dim)
        let (q, k, v) = (try bf16(query), try bf16(key), try bf16(value))
        // The tensor-core kernel takes dO as bf16 (an mma operand), the SIMT kernels as fp32.
        let dO = tensorCores ? try bf16(outputGrad) : try DeviceBuffer.upload(device, outputGrad.scalars)
        let lse = try DeviceBuffer.upload(device, logSumExp.scalars), dl = try DeviceBuffer.upload(device, delta.scalars)
        let dq = try DeviceBuffer.upload(device, grads.query.scalars)
        let dk = try DeviceBuffer.upload(device, grads.key.scalars), dv = try DeviceBuffer.upload(device, grads.value.scalars)
        let inputs: [CUDADevice.Argument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address),
                                             .pointer(dO.address), .pointer(lse.address), .pointer(dl.address)]
            + tokens.arguments
        let sizes: [CUDADevice.Argument] = [.int(Int32(g.queries)), .int(Int32(g.keys)), .int(Int32(g.heads)),
                                            .int(Int32(g.kvHeads)), .int(Int32(g.dim)), .float(scale)] + maskArguments(mask)
        let launch = tensorCores ? try backwardLaunch(queries: g.queries, keys: g.keys, kvHeads: g.kvHeads,
                                                      batch: g.batch, dim: g.dim, tokens: tokens) : nil
        try runBackward(launch, queries: g.queries, keys: g.keys, heads: g.heads, kvHeads: g.kvHeads, batch: g.batch,
                        inputs: inputs, gradients: (dq, dk, dv), sizes: sizes)
        try device.synchronize()
        withExtendedLifetime((q, k, v, dO, lse, dl, tokens, launch)) {}
        grads.query.scalars = try dq.download(grads.query.count, as: Float.self, initial: 0)
        grads.key.scalars = try dk.download(grads.key.count, as: Float.self, initial: 0)
        grads.value.scalars = try dv.download(grads.value.count, as: Float.self, initial: 0)
    }

    // MARK: Helpers

    /// The forward kernel for head dimension `dim`, ready to launch. The tensor-core kernel takes 128 query rows
    /// per block of 4 warps and needs the bounds of each key tile, computed here first; the SIMT kernel takes one
    /// row per warp.
    func forwardLaunch(queries: Int, keys: Int, heads: Int, batch: Int, dim: Int, tokens: TokenBuffers) throws
        -> ForwardLaunch {
        guard usesTensorCores(headDim: dim) else {
            return ForwardLaunch(kernel: try device.kernel("attention_forward", source: Self.source),
                                 grid: ((queries + warps - 1) / warps, heads, batch), block: 32 * warps,
                                 sharedBytes: 0, keyBounds: nil)
        }
        // The lab's winners (lab/results): D=128 with 64-key tiles, D=64 with 128-key tiles.
        let (rows, keyTile) = (128, dim == 128 ? 64 : 128)
        let kernel = try device.kernel("attention_forward_mma_d\(dim)_w4_m2_n\(keyTile)", source: Self.tensorCoreSource)
        let sharedBytes = (rows + 2 * keyTile) * (dim + 8) * 2
        try device.allowSharedMemory(kernel, bytes: sharedBytes)
        let tiles = (keys + keyTile - 1) / keyTile
        let bounds = try DeviceBuffer(device, bytes: 16 * tiles)
        try device.launch(try device.kernel("attention_tile_bounds", source: Self.tensorCoreSource),
                          grid: ((tiles + 127) / 128, 1, 1), block: 128,
                          [tokens.arguments[1], tokens.arguments[3], .int(Int32(keys)), .int(Int32(keyTile)),
                           .pointer(bounds.address)])
        return ForwardLaunch(kernel: kernel, grid: ((queries + rows - 1) / rows, heads, batch), block: 128,
                             sharedBytes: sharedBytes, keyBounds: bounds)
    }

    /// One forward launch: the kernel, its shape, and the key-tile bounds it reads (kept alive with it).
    struct ForwardLaunch {
        let kernel: OpaquePointer?
        let grid: (Int, Int, Int)
        let block: Int
        let sharedBytes: Int
        let keyBounds: DeviceBuffer?

        /// Arguments the tensor-core kernel takes after the token arrays.
        var extraArguments: [CUDADevice.Argument] { keyBounds.map { [.pointer($0.address)] } ?? [] }

        func run(_ device: CUDADevice, _ arguments: [CUDADevice.Argument]) throws {
            try device.launch(kernel, grid: grid, block: block, sharedBytes: sharedBytes, arguments)
        }
    }

    /// Launches the backward kernel(s) that add dQ, dK, dV: `tensorCore` (from `backwardLaunch`, for D ∈ {64, 128})
    /// or else the SIMT pair. `inputs`: Q, K, V, dO, LSE, δ and the token arrays; `sizes`: the trailing scalars.
    func runBackward(_ tensorCore: BackwardLaunch?, queries: Int, keys: Int, heads: Int, kvHeads: Int, batch: Int,
                     inputs: [CUDADevice.Argument], gradients: (query: DeviceBuffer, key: DeviceBuffer, value: DeviceBuffer),
                     sizes: [CUDADevice.Argument]) throws {
        let (dq, dk, dv) = gradients
        if let tensorCore {
            try tensorCore.run(device, inputs + tensorCore.boundArguments
                + [.pointer(dq.address), .pointer(dk.address), .pointer(dv.address)] + sizes)
            return
        }
        try device.launch(try device.kernel("attention_backward_dkdv", source: Self.source),
                          grid: ((keys + warps - 1) / warps, kvHeads, batch), block: 32 * warps,
                          inputs + [.pointer(dk.address), .pointer(dv.address)] + sizes)
        try device.launch(try device.kernel("attention_backward_dq", source: Self.source),
                          grid: ((queries + warps - 1) / warps, heads, batch), block: 32 * warps,
                          inputs + [.pointer(dq.address)] + sizes)
    }

    /// The tensor-core backward for head dimension `dim` (64 or 128), ready to launch: one block of 8 warps per
    /// 128 keys and key/value head (the lab's winner over 4 warps: lab/results); the bounds of each 64-row query
    /// tile and of each key tile are computed here.
    func backwardLaunch(queries: Int, keys: Int, kvHeads: Int, batch: Int, dim: Int, tokens: TokenBuffers) throws
        -> BackwardLaunch {
        let (warps, queryTile) = (8, 64)
        let keyTile = 16 * warps
        let kernel = try device.kernel("attention_backward_mma_d\(dim)_w\(warps)", source: Self.backwardSource)
        let sharedBytes = (2 * keyTile + 2 * queryTile) * (dim + 8) * 2 + keyTile * (queryTile + 8) * 2 + 2 * queryTile * 4
        try device.allowSharedMemory(kernel, bytes: sharedBytes)
        let boundsKernel = try device.kernel("attention_tile_bounds", source: Self.backwardSource)
        var bounds: [DeviceBuffer] = []
        for (rows, tile, position, document) in [(queries, queryTile, 0, 2), (keys, keyTile, 1, 3)] {
            let tiles = (rows + tile - 1) / tile
            let buffer = try DeviceBuffer(device, bytes: 16 * tiles)
            try device.launch(boundsKernel, grid: ((tiles + 127) / 128, 1, 1), block: 128,
                              [tokens.arguments[position], tokens.arguments[document], .int(Int32(rows)),
                               .int(Int32(tile)), .pointer(buffer.address)])
            bounds.append(buffer)
        }
        return BackwardLaunch(kernel: kernel, grid: ((keys + keyTile - 1) / keyTile, kvHeads, batch), block: 32 * warps,
                              sharedBytes: sharedBytes, bounds: bounds)
    }

    /// One tensor-core backward launch and the tile bounds it reads (query tiles, key tiles).
    struct BackwardLaunch {
        let kernel: OpaquePointer?
        let grid: (Int, Int, Int)
        let block: Int
        let sharedBytes: Int
        let bounds: [DeviceBuffer]

        var boundArguments: [CUDADevice.Argument] { bounds.map { .pointer($0.address) } }

        func run(_ device: CUDADevice, _ arguments: [CUDADevice.Argument]) throws {
            try device.launch(kernel, grid: grid, block: block, sharedBytes: sharedBytes, arguments)
        }
    }

    private func bf16(_ tensor: Tensor) throws -> DeviceBuffer {
        try DeviceBuffer.upload(device, tensor.scalars.map(BFloat16.bits))
    }

    func maskArguments(_ mask: AttentionMask) -> [CUDADevice.Argument] {
        switch mask.kind {
        case .causal: return [.int(0), .int(0)]
        case .full: return [.int(1), .int(0)]
        case .window(let w): return [.int(2), .int(Int32(w))]
        }
    }

    /// Global positions and document ids of the query and key rows, as int32 device arrays.
    struct TokenBuffers {
        let buffers: [DeviceBuffer]
        init(_ device: CUDADevice, _ mask: AttentionMask, _ queries: [Int], _ keys: [Int]) throws {
            buffers = [try .upload(device, queries.map { Int32($0) }), try .upload(device, keys.map { Int32($0) }),
                       try .upload(device, mask.documentIndices(of: queries)),
                       try .upload(device, mask.documentIndices(of: keys))]
        }
        var arguments: [CUDADevice.Argument] { buffers.map { .pointer($0.address) } }
    }

    /// The shared shape checks plus this backend's limit on D.
    private func geometry(_ query: Tensor, _ key: Tensor, _ value: Tensor, _ queryPositions: [Int],
                          _ keyPositions: [Int]) throws -> BlockGeometry {
        let g = try BlockGeometry(query: query, key: key, value: value, queryPositions: queryPositions,
                                  keyPositions: keyPositions)
        guard g.dim <= 256 else {
            throw DistFlashError(.shapeMismatch, "head dim D = \(g.dim): the CUDA kernels support D ≤ 256")
        }
        return g
    }
}
