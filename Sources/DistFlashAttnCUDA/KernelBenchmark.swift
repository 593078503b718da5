import DistFlashAttn

extension CUDABlocks {
    /// Median seconds of the forward and of the backward primitives for `problem` (positions 0..<S), timed with
    /// CUDA events on device-resident bf16 inputs after one warm-up. The forward resets its partial outside the
    /// timed region; the backward's timed region is what a training step pays: zeroed dQ/dK/dV,
    /// δ = rowsum(dO ∘ O), the backward kernel(s).
    public func benchmark(_ problem: AttentionProblem, repeats: Int, backward: Bool) throws
        -> (forward: Double, backward: Double?) {
        var random = SeededRandom(seed: UInt64(problem.sequence))
        func input(_ shape: [Int]) throws -> DeviceTensor { try upload(random.normalTensor(shape: shape), as: .input) }
        let (q, k, v) = (try input(problem.queryShape), try input(problem.keyValueShape), try input(problem.keyValueShape))
        let positions = Array(0..<problem.sequence)
        let (b, h, s) = (problem.batch, problem.heads, problem.sequence)
        var output = try filled(problem.queryShape, with: 0, like: nil)
        var logSumExp = try filled([b, h, s], with: -.infinity, like: nil)
        let timer = try EventTimer(device)
        let forwardSeconds = try timer.median(repeats: repeats) {
            output = try filled(problem.queryShape, with: 0, like: nil)
            logSumExp = try filled([b, h, s], with: -.infinity, like: nil)
        } timed: {
            try forward(query: q, queryPositions: positions, key: k, value: v, keyPositions: positions,
                        mask: problem.mask, scale: problem.scale, output: &output, logSumExp: &logSumExp)
        }
        guard backward else {
            _ = try finish()
            return (forwardSeconds, nil)
        }
        // The forward's O and LSE feed the backward; dO is random.
        let outputGrad = try input(problem.queryShape)
        let backwardSeconds = try timer.median(repeats: repeats) {} timed: {
            var dq = try filled(problem.queryShape, with: 0, like: nil)
            var dk = try filled(problem.keyValueShape, with: 0, like: nil)
            var dv = try filled(problem.keyValueShape, with: 0, like: nil)
            let delta = try backwardPreprocess(output: output, outputGrad: outputGrad)
            try self.backward(query: q, queryPositions: positions, key: k, value: v, keyPositions: positions,
                              mask: problem.mask, scale: problem.scale, outputGrad: outputGrad, logSumExp: logSumExp,
                              delta: delta, queryGrad: &dq, keyGrad: &dk, valueGrad: &dv)
        }
        _ = try finish()
        return (forwardSeconds, backwardSeconds)
    }
}

/// Times GPU work with a pair of CUDA events on the device's compute stream (destroyed with the timer).
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
            try driver.check(driver.cuEventRecord(start, device.stream), "cuEventRecord")
            try timed()
            try driver.check(driver.cuEventRecord(end, device.stream), "cuEventRecord")
            try driver.check(driver.cuEventSynchronize(end), "cuEventSynchronize")
            var milliseconds: Float = 0
            try driver.check(driver.cuEventElapsedTime(&milliseconds, start, end), "cuEventElapsedTime")
            if run > 0 { times.append(Double(milliseconds) / 1e3) }  // run 0 warms up
        }
        return times.sorted()[times.count / 2]
    }
}
