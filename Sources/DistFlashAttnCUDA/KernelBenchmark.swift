import DistFlashAttn

extension CUDABlocks {
    /// Median seconds of the forward and of the backward primitives for `problem` (positions 0..<S), timed with
    /// CUDA events on device-resident inputs after one warm-up. The inputs are made on the device (unit-variance
    /// random values: the host would take seconds per tensor at S = 64k). The forward resets its partial outside
    /// the timed region; the backward's timed region is what a training step pays: zeroed dQ/dK/dV,
    /// δ = rowsum(dO ∘ O), the backward kernel(s).
    public func benchmark(_ problem: AttentionProblem, repeats: Int, backward: Bool) throws
        -> (forward: Double, backward: Double?) {
        let (q, k, v) = (try random(problem.queryShape, seed: 1), try random(problem.keyValueShape, seed: 2),
                         try random(problem.keyValueShape, seed: 3))
        let positions = Array(0..<problem.sequence)
        let (b, h, s) = (problem.batch, problem.heads, problem.sequence)
        var output = try filled(problem.queryShape, with: 0, like: nil)
        var logSumExp = try filled([b, h, s], with: -.infinity, like: nil)
        let clock = PhaseClock(device: device)
        let forwardSeconds = try Self.median(repeats: repeats, clock) {
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
        let outputGrad = try random(problem.queryShape, seed: 4)
        let backwardSeconds = try Self.median(repeats: repeats, clock) {} timed: {
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

    /// Median seconds of `timed` (GPU work on the compute stream, timed by `clock`'s events) over `repeats` runs
    /// after one warm-up; `setUp` runs before each, untimed.
    private static func median(repeats: Int, _ clock: PhaseClock, setUp: () throws -> Void,
                               timed: () throws -> Void) throws -> Double {
        var times: [Double] = []
        for run in 0...max(1, repeats) {
            try setUp()
            try clock.time("timed", timed)
            let seconds = try clock.collect()["timed", default: 0]
            if run > 0 { times.append(seconds) }  // run 0 warms up
        }
        return times.sorted()[times.count / 2]
    }
}
