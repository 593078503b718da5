import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import DistFlashTrainCUDA
import Testing

/// The GPU trainer against the CPU trainer on the same run (same seed: same data and initial weights), and P
/// GPUs against one. bf16 GEMM operands make the GPU's steps differ slightly, so the loss trajectories are
/// compared with a tolerance.
@Suite("GPU trainer")
struct DeviceTrainerTests {
    static func configuration(workers: Int, plan: Plan.Kind = .distflash) -> TrainingConfiguration {
        var configuration = TrainingConfiguration()
        (configuration.model, configuration.task, configuration.sequence, configuration.batch) = ("tiny", "recall", 512, 2)
        (configuration.steps, configuration.warmupSteps, configuration.workers, configuration.plan) = (4, 1, workers, plan)
        configuration.seed = UInt64.random(in: 0...1_000_000)
        return configuration
    }

    @Test("one GPU's first losses track the CPU trainer's (with and without a sequence warm-up)",
          .enabled(if: gpu != nil), arguments: [false, true])
    func tracksCPU(_ sequenceWarmup: Bool) throws {
        var configuration = Self.configuration(workers: 1)
        if sequenceWarmup { configuration.sequenceWarmup = .init(sequence: 48, steps: 2, batch: 4) }
        var cpu = try Trainer(configuration)
        let device = try DeviceTrainer(configuration, devices: [gpu!])
        for _ in 0..<configuration.steps {
            let (expected, got) = (try cpu.step(), try device.step())
            #expect(abs(got.loss - expected.loss) <= 2e-2 * expected.loss, "step \(got.step): \(got.loss) vs CPU \(expected.loss)")
            #expect(abs(got.gradientNorm - expected.gradientNorm) <= 5e-2 * expected.gradientNorm, "step \(got.step) ‖g‖")
            // The device time by phase: each phase ran, and together they fit in the step's wall time.
            let phases = got.phaseSeconds
            #expect(Set(phases.keys) == ["attention", "gemm", "optimizer"] && phases.values.allSatisfy { $0 > 0 },
                    "\(phases)")
            #expect(phases.values.reduce(0, +) <= got.seconds, "\(phases) in \(got.seconds) s")
        }
    }
}

extension SeveralGPUs {
    @Suite("GPU trainer on several GPUs")
    struct Training {
        @Test("P GPUs (every plan) track one GPU: same losses and gradient norms to bf16 accuracy",
              .enabled(if: gpus.count >= 2), arguments: Plan.Kind.allCases)
        func multiGPUTracksOne(_ plan: Plan.Kind) throws {
            let one = try DeviceTrainer(DeviceTrainerTests.configuration(workers: 1), devices: [gpus[0]])
            var configuration = DeviceTrainerTests.configuration(workers: gpus.count, plan: plan)
            configuration.seed = one.configuration.seed
            let many = try DeviceTrainer(configuration, devices: gpus)
            for _ in 0..<configuration.steps {
                let (expected, got) = (try one.step(), try many.step())
                #expect(abs(got.loss - expected.loss) <= 1e-2 * expected.loss, "\(plan) step \(got.step): \(got.loss) vs \(expected.loss)")
                #expect(abs(got.gradientNorm - expected.gradientNorm) <= 3e-2 * expected.gradientNorm, "\(plan) step \(got.step) ‖g‖")
            }
        }
    }
}

extension DeviceTrainerTests {
    @Test("resident and lean bf16 weights give the same trajectory (the update's copy equals a fresh rounding)",
          .enabled(if: gpu != nil))
    func leanWeights() throws {
        var configuration = Self.configuration(workers: 1)
        let resident = try DeviceTrainer(configuration, devices: [gpu!])
        configuration.leanWeights = true
        let lean = try DeviceTrainer(configuration, devices: [gpu!])
        for _ in 0..<configuration.steps {
            let (expected, got) = (try resident.step(), try lean.step())
            // Same bf16 operands every step; only the order of fp32 atomics (dQ, embedding) may differ between runs.
            #expect(abs(got.loss - expected.loss) <= 1e-4 * expected.loss, "step \(got.step): \(got.loss) vs \(expected.loss)")
            #expect(abs(got.gradientNorm - expected.gradientNorm) <= 1e-3 * expected.gradientNorm, "step \(got.step) ‖g‖")
        }
    }

    @Test("a GPU run resumed from its checkpoint continues the uninterrupted trajectory", .enabled(if: gpu != nil))
    func resumes() throws {
        let configuration = Self.configuration(workers: 1)
        let whole = try DeviceTrainer(configuration, devices: [gpu!])
        let expected = try (0..<configuration.steps).map { _ in try whole.step() }
        let first = try DeviceTrainer(configuration, devices: [gpu!])
        for _ in 0..<2 { try first.step() }
        let checkpoint = try first.checkpoint()
        #expect(checkpoint.optimizer.step == 2 && checkpoint.step == 2)
        let resumed = try DeviceTrainer(configuration, devices: [gpu!], resume: checkpoint)
        for report in expected.dropFirst(2) {
            let got = try resumed.step()
            // Same weights and moments; only the order of fp32 atomics (dQ, embedding) may differ between runs.
            #expect(abs(got.loss - report.loss) <= 1e-4 * report.loss, "step \(got.step): \(got.loss) vs \(report.loss)")
        }
    }
}
