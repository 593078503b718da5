import DistFlashAttn
import DistFlashAttnCPU
import DistFlashAttnCUDA
import DistFlashTrain
import DistFlashAttnReference
import Testing

/// Whether this machine has a usable GPU (driver, NVRTC and a device).
let gpu: CUDADevice? = try? CUDADevice(ordinal: 0)

@Suite("CUDA backend")
struct CUDABackendTests {
    @Test("without a driver, opening a GPU fails with one clear sentence", .enabled(if: gpu == nil))
    func noDriver() {
        do {
            _ = try CUDADevice(ordinal: 0)
            Issue.record("opened a GPU on a machine said to have none")
        } catch let error as DistFlashError {
            #expect(error.code == .runtime)
            #expect(error.message.contains("DISTFLASH_LIBCUDA") || error.message.contains("GPU"), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("equals the float64 reference (bf16 and fp16 inputs; head dims on tensor cores and SIMT; every tensor-core kernel set the card runs)",
          .enabled(if: gpu != nil),
          arguments: [AttentionMask.causal, .full, .window(37), .documents([1, 100, 88])],
          [AttentionProblem.DType.bf16, .fp16])
    func matchesReference(_ mask: AttentionMask, _ dtype: AttentionProblem.DType) throws {
        // The card's best kernels, and the mma.sync ones too where those are not it (they serve cards before Hopper).
        let best = TensorCoreInstructions.best(for: gpu!)
        for instructions in best == .mmaSync ? [best] : [best, .mmaSync] {
            try checkBackend(CUDABackend(device: gpu!, inputs: DeviceTensor.Precision(inputsOf: dtype)!,
                                         instructions: instructions), mask, dtype)
        }
    }

    @Test("δ = rowsum(dO ∘ O) from O in the input type equals δ from the same values in fp32", .enabled(if: gpu != nil),
          arguments: [AttentionProblem.DType.bf16, .fp16])
    func preprocessOfSixteenBitOutput(_ dtype: AttentionProblem.DType) throws {
        let blocks = CUDABlocks(device: gpu!, inputs: DeviceTensor.Precision(inputsOf: dtype)!)
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let (o, dO) = (random.normalTensor(shape: [2, 77, 3, 40]).rounded(to: dtype),
                       random.normalTensor(shape: [2, 77, 3, 40]).rounded(to: dtype))
        let (narrow, gradient) = (try blocks.upload(o, as: .input), try blocks.upload(dO, as: .input))
        let wide = try blocks.backwardPreprocess(output: try blocks.upload(o, as: .accumulator), outputGrad: gradient)
        let delta = try blocks.backwardPreprocess(output: narrow, outputGrad: gradient)
        #expect(delta.shape == [2, 3, 77])
        #expect(try delta.download().scalars == wide.download().scalars)
        _ = try blocks.finish()
    }

    @Test("a whole-block forward writes O in the input type (the fp32 partial's, rounded) and its backward equals the primitives'",
          .enabled(if: gpu != nil), arguments: [AttentionMask.causal, .documents([30, 1, 100])],
          [AttentionProblem.DType.bf16, .fp16])
    func wholeForward(_ mask: AttentionMask, _ dtype: AttentionProblem.DType) throws {
        let blocks = CUDABlocks(device: gpu!, inputs: DeviceTensor.Precision(inputsOf: dtype)!)
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        // D = 64 and 128 on the card's tensor-core kernels (one kernel writes O on wgmma), D = 40 on SIMT.
        for (heads, kvHeads, dim) in [(6, 2, 64), (4, 4, 128), (2, 1, 40)] {
            let (q, k, v) = (try blocks.upload(random.normalTensor(shape: [2, 131, heads, dim]), as: .input),
                             try blocks.upload(random.normalTensor(shape: [2, 131, kvHeads, dim]), as: .input),
                             try blocks.upload(random.normalTensor(shape: [2, 131, kvHeads, dim]), as: .input))
            let positions = Array(0..<131), scale = 1 / Float(dim).squareRoot()
            var output = try blocks.filled(q.shape, with: 0, like: nil)
            var logSumExp = try blocks.filled([2, heads, 131], with: -.infinity, like: nil)
            try blocks.forward(query: q, queryPositions: positions, key: k, value: v, keyPositions: positions,
                               mask: mask, scale: scale, output: &output, logSumExp: &logSumExp)
            let whole = try blocks.wholeForward(query: q, queryPositions: positions, key: k, value: v,
                                                keyPositions: positions, mask: mask, scale: scale)
            #expect(whole.output.precision == q.precision && whole.output.shape == q.shape)
            let rounded = try output.download().rounded(to: dtype).scalars
            #expect(try blocks.narrowed(output).download().scalars == rounded)  // to nearest, ties to even, as the host
            #expect(try whole.output.download().scalars == rounded, "D = \(dim)")
            let (got, want) = (try whole.logSumExp.download().scalars, try logSumExp.download().scalars)
            #expect(zip(got, want).allSatisfy { $0 == $1 || abs($0 - $1) <= 1e-6 * max(1, abs($1)) }, "D = \(dim)")

            // The whole-block backward (dQ written, never filled, on wgmma) against the primitives' (dQ added into
            // zeros): the same sums, in another order only where reductions from several blocks meet.
            let outputGrad = try blocks.upload(random.normalTensor(shape: q.shape), as: .input)
            let delta = try blocks.backwardPreprocess(output: whole.output, outputGrad: outputGrad)
            var (dq, dk, dv) = (try blocks.filled(q.shape, with: 0, like: nil), try blocks.filled(k.shape, with: 0, like: nil),
                                try blocks.filled(k.shape, with: 0, like: nil))
            try blocks.backward(query: q, queryPositions: positions, key: k, value: v, keyPositions: positions, mask: mask,
                                scale: scale, outputGrad: outputGrad, logSumExp: whole.logSumExp, delta: delta,
                                queryGrad: &dq, keyGrad: &dk, valueGrad: &dv)
            let grads = try blocks.wholeBackward(query: q, queryPositions: positions, key: k, value: v,
                                                 keyPositions: positions, mask: mask, scale: scale, output: whole.output,
                                                 outputGrad: outputGrad, logSumExp: whole.logSumExp)
            for (got, want, name) in [(grads.query, dq, "dQ"), (grads.key, dk, "dK"), (grads.value, dv, "dV")] {
                let (a, b) = (try got.download().scalars, try want.download().scalars)
                let top = b.map(abs).max() ?? 0
                #expect(a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, top) },
                        "D = \(dim) \(name)")
            }
            // On wgmma, dQ rotated back by RoPE straight into bf16 columns 8 … of a wider matrix: RoPE's backward of
            // the whole backward's dQ, placed there (to one bf16 step), the columns around untouched.
            guard blocks.wgmmaBackward(headDim: dim) else { continue }
            let rope = try RotaryEmbedding(positions: positions, headDim: dim, theta: 10_000)
            let tables = try TrainingKernels.RotaryTables(device: gpu!, cosines: rope.cosines, sines: rope.sines,
                                                          tokens: 131, headDim: dim)
            let (columns, width) = (heads * dim, heads * dim + 24)
            let wide = try DeviceTensor.upload(Tensor(shape: [262, width]), to: gpu!, as: .bfloat16)
            let fused = try blocks.wholeBackward(query: q, positions: positions, key: k, value: v, mask: mask,
                                                 scale: scale, output: whole.output, outputGrad: outputGrad,
                                                 logSumExp: whole.logSumExp, rotatingQueryGradBy: tables,
                                                 into: .init(wide, first: 8))
            let separate = try TrainingKernels(device: gpu!).rotaryBackward(grads.query, tables).download().scalars
            let placed = try wide.download().scalars
            for row in 0..<262 {
                let (start, expected) = (row * width + 8, separate[row * columns..<(row + 1) * columns])
                #expect(zip(placed[start..<start + columns], expected).allSatisfy { abs($0 - $1) <= 0x1p-8 * abs($1) + 1e-6 },
                        "D = \(dim) rotated dQ, row \(row)")
                #expect((placed[row * width..<start] + placed[start + columns..<(row + 1) * width]).allSatisfy { $0 == 0 })
            }
            for (got, want, name) in [(fused.key, grads.key, "dK"), (fused.value, grads.value, "dV")] {
                let (a, b) = (try got.download().scalars, try want.download().scalars)
                let top = b.map(abs).max() ?? 0
                #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, top) }, "D = \(dim) \(name), rotated dQ")
            }
        }
        _ = try blocks.finish()
    }

    private func checkBackend(_ backend: CUDABackend, _ mask: AttentionMask, _ dtype: AttentionProblem.DType) throws {
        // S = 517 reaches tiles the mask shows whole (no mask work), which S = 189's ragged tiles never are.
        for (s, h, hkv, d) in [(189, 6, 2, 64), (189, 8, 1, 128), (189, 4, 2, 40), (517, 2, 1, 128)] {
            let problem = try AttentionProblem(batch: 2, sequence: s, heads: h, kvHeads: hkv, headDim: d,
                                               mask: mask.stretched(to: s), dtype: dtype)
            var random = SeededRandom(seed: .random(in: 0...UInt64.max))
            let (q, k, v, dO) = (random.normalTensor(shape: problem.queryShape).rounded(to: dtype),
                                 random.normalTensor(shape: problem.keyValueShape).rounded(to: dtype),
                                 random.normalTensor(shape: problem.keyValueShape).rounded(to: dtype),
                                 random.normalTensor(shape: problem.queryShape).rounded(to: dtype))
            let result = try backend.attention(problem, query: q, key: k, value: v)
            let grads = try backend.attentionBackward(problem, query: q, key: k, value: v, result: result, outputGrad: dO)
            let precision = ReferenceCheck.Precision.of(dtype, tensorCores: backend.usesTensorCores(headDim: d))
            for check in ReferenceCheck.run(problem, query: q, key: k, value: v, result: result, outputGrad: dO,
                                            gradients: grads, precision: precision) {
                #expect(check.passed, "\(backend.blocks.instructions) D=\(d): \(check.summary)")
            }
        }
    }
}

private extension AttentionMask {
    /// The same mask over `length` tokens: a packed-document mask's last document takes up the difference.
    func stretched(to length: Int) -> AttentionMask {
        guard let lengths = documentLengths else { return self }
        let head = lengths.dropLast()
        return .documents(head + [length - head.reduce(0, +)], kind)
    }
}
