import DistFlashAttn

extension CUDABackend {
    /// Median seconds of the forward and of the backward kernels for `problem` (positions 0..<S), timed with CUDA
    /// events on device-resident bf16 inputs after one warm-up. The forward resets its partial outside the timed
    /// region; the backward's timed region is what a training step pays: zeroing dQ/dK/dV, δ = rowsum(dO ∘ O), the
    /// backward kernel(s).
    public func benchmark(_ problem: AttentionProblem, repeats: Int, backward: Bool) throws
        -> (forward: Double, backward: Double?) {
        try device.exclusive {
            let (b, s, h, hkv, d) = (problem.batch, problem.sequence, problem.heads, problem.kvHeads, problem.headDim)
            var random = SeededRandom(seed: UInt64(s))
            func randomBF16(_ shape: [Int]) throws -> DeviceBuffer {
                try DeviceBuffer.upload(device, random.normalTensor(shape: shape).scalars.map(BFloat16.bits))
            }
            let (q, k, v) = (try randomBF16(problem.queryShape), try randomBF16(problem.keyValueShape),
                             try randomBF16(problem.keyValueShape))
            let positions = Array(0..<s)
            let tokens = try TokenBuffers(device, problem.mask, positions, positions)
            let (queryCount, keyCount, rowCount) = (b * s * h * d, b * s * hkv * d, b * h * s)
            let o = try DeviceBuffer(device, bytes: 4 * queryCount), lse = try DeviceBuffer(device, bytes: 4 * rowCount)
            let sizes: [CUDADevice.Argument] = [.int(Int32(s)), .int(Int32(s)), .int(Int32(h)), .int(Int32(hkv)),
                                                .int(Int32(d)), .float(problem.scale)] + maskArguments(problem.mask)
            let forward = try forwardLaunch(queries: s, keys: s, heads: h, batch: b, dim: d, tokens: tokens)
            let forwardArguments: [CUDADevice.Argument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address)]
                + tokens.arguments + forward.extraArguments + [.pointer(o.address), .pointer(lse.address)] + sizes
            let timer = try EventTimer(device)
            let driver = device.driver
            let forwardSeconds = try timer.median(repeats: repeats) {
                try driver.check(driver.cuMemsetD32(o.address, 0, queryCount), "cuMemsetD32")
                try driver.check(driver.cuMemsetD32(lse.address, 0xff80_0000, rowCount), "cuMemsetD32")  // −∞
            } timed: {
                try forward.run(device, forwardArguments)
            }
            withExtendedLifetime((q, k, v, tokens, o, lse, forward)) {}
            guard backward else { return (forwardSeconds, nil) }

            // The forward's O and LSE feed the backward; dO is random (bf16 for the kernel, fp32 for δ).
            let outputGrad = random.normalTensor(shape: problem.queryShape).roundedToBFloat16()
            let dO32 = try DeviceBuffer.upload(device, outputGrad.scalars)
            let dO16 = try DeviceBuffer.upload(device, outputGrad.scalars.map(BFloat16.bits))
            let delta = try DeviceBuffer(device, bytes: 4 * rowCount)
            let dq = try DeviceBuffer(device, bytes: 4 * queryCount)
            let dk = try DeviceBuffer(device, bytes: 4 * keyCount), dv = try DeviceBuffer(device, bytes: 4 * keyCount)
            let preprocess = try device.kernel("attention_backward_preprocess", source: Self.source)
            let tensorCores = usesTensorCores(headDim: d)
            let launch = tensorCores
                ? try backwardLaunch(queries: s, keys: s, kvHeads: hkv, batch: b, dim: d, tokens: tokens) : nil
            let inputs: [CUDADevice.Argument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address),
                                                 .pointer((tensorCores ? dO16 : dO32).address), .pointer(lse.address),
                                                 .pointer(delta.address)] + tokens.arguments
            let backwardSeconds = try timer.median(repeats: repeats) {} timed: {
                for (buffer, count) in [(dq, queryCount), (dk, keyCount), (dv, keyCount)] {
                    try driver.check(driver.cuMemsetD32(buffer.address, 0, count), "cuMemsetD32")
                }
                try device.launch(preprocess, grid: ((s + warps - 1) / warps, h, b), block: 32 * warps,
                                  [.pointer(o.address), .pointer(dO32.address), .pointer(delta.address),
                                   .int(Int32(s)), .int(Int32(h)), .int(Int32(d))])
                try runBackward(launch, queries: s, keys: s, heads: h, kvHeads: hkv, batch: b, inputs: inputs,
                                gradients: (dq, dk, dv), sizes: sizes)
            }
            withExtendedLifetime((q, k, v, tokens, o, lse, dO32, dO16, delta, dq, dk, dv, launch)) {}
            return (forwardSeconds, backwardSeconds)
        }
    }
}

/// Times GPU work with a pair of CUDA events on the default stream (destroyed with the timer).
final class EventTimer {
    let device: CUDADevice
    let start: OpaquePointer?
    let end: OpaquePointer?

    init(_ device: CUDADevice) throws {
        self.device = device
        var start: OpaquePointer?, end: OpaquePointer?
        try device.driver.check(device.driver.cuEventCreate(&start, 0), "cuEventCreate")
        try device.driver.check(device.driver.cuEventCreate(&end, 0), "cuEventCreate")
        (self.start, self.end) = (start, end)
    }

    deinit {
        _ = device.driver.cuEventDestroy(start)
        _ = device.driver.cuEventDestroy(end)
    }

    /// Median seconds of `timed` over `repeats` runs after one warm-up; `setUp` runs before each, untimed.
    func median(repeats: Int, setUp: () throws -> Void, timed: () throws -> Void) throws -> Double {
        let driver = device.driver
        var times: [Double] = []
        for run in 0...max(1, repeats) {
            try setUp()
            try driver.check(driver.cuEventRecord(start, nil), "cuEventRecord")
            try timed()
            try driver.check(driver.cuEventRecord(end, nil), "cuEventRecord")
            try driver.check(driver.cuEventSynchronize(end), "cuEventSynchronize")
            var milliseconds: Float = 0
            try driver.check(driver.cuEventElapsedTime(&milliseconds, start, end), "cuEventElapsedTime")
            if run > 0 { times.append(Double(milliseconds) / 1e3) }  // run 0 warms up
        }
        return times.sorted()[times.count / 2]
    }
}
