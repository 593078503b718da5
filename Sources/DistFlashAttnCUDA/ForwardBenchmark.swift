import DistFlashAttn

extension CUDABackend {
    /// Median seconds of the forward kernel alone for `problem` (positions 0..<S), timed with CUDA events on
    /// device-resident bf16 inputs after one warm-up launch; the output partial is reset before each launch,
    /// outside the timed region.
    public func benchmarkForward(_ problem: AttentionProblem, repeats: Int) throws -> Double {
        try device.exclusive {
            let (b, s, h, hkv, d) = (problem.batch, problem.sequence, problem.heads, problem.kvHeads, problem.headDim)
            var random = SeededRandom(seed: UInt64(s))
            let q = try DeviceBuffer.upload(device, random.normalTensor(shape: problem.queryShape).scalars.map(BFloat16.bits))
            let k = try DeviceBuffer.upload(device, random.normalTensor(shape: problem.keyValueShape).scalars.map(BFloat16.bits))
            let v = try DeviceBuffer.upload(device, random.normalTensor(shape: problem.keyValueShape).scalars.map(BFloat16.bits))
            let positions = Array(0..<s)
            let tokens = try TokenBuffers(device, problem.mask, positions, positions)
            let o = try DeviceBuffer(device, bytes: 4 * b * s * h * d)
            let lse = try DeviceBuffer(device, bytes: 4 * b * h * s)
            let (kernel, grid) = try forwardKernel(queries: s, heads: h, batch: b, dim: d)
            let arguments: [CUDADevice.Argument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address)]
                + tokens.arguments
                + [.pointer(o.address), .pointer(lse.address), .int(Int32(s)), .int(Int32(s)), .int(Int32(h)),
                   .int(Int32(hkv)), .int(Int32(d)), .float(problem.scale)] + maskArguments(problem.mask)
            let driver = device.driver
            var start: OpaquePointer?, end: OpaquePointer?
            try driver.check(driver.cuEventCreate(&start, 0), "cuEventCreate")
            try driver.check(driver.cuEventCreate(&end, 0), "cuEventCreate")
            var times: [Double] = []
            for run in 0...max(1, repeats) {
                try driver.check(driver.cuMemsetD32(o.address, 0, b * s * h * d), "cuMemsetD32")
                try driver.check(driver.cuMemsetD32(lse.address, 0xff80_0000, b * h * s), "cuMemsetD32")  // −∞
                try driver.check(driver.cuEventRecord(start, nil), "cuEventRecord")
                try device.launch(kernel, grid: grid, block: 32 * warps, arguments)
                try driver.check(driver.cuEventRecord(end, nil), "cuEventRecord")
                try driver.check(driver.cuEventSynchronize(end), "cuEventSynchronize")
                var milliseconds: Float = 0
                try driver.check(driver.cuEventElapsedTime(&milliseconds, start, end), "cuEventElapsedTime")
                if run > 0 { times.append(Double(milliseconds) / 1e3) }  // run 0 warms up
            }
            withExtendedLifetime((q, k, v, tokens, o, lse)) {}
            return times.sorted()[times.count / 2]
        }
    }
}
