import DistFlashAttn
import Foundation
import Testing
@testable import DistFlashTrain

/// The tiny preset on the recall task at S = 61, B = 2 (3 queries a row): fast enough to take 20 steps a run.
func smallRun(workers: Int = 1, plan: Plan.Kind = .distflash, steps: Int = 20, seed: UInt64) -> TrainingConfiguration {
    var c = TrainingConfiguration()
    (c.sequence, c.batch, c.steps, c.warmupSteps, c.learningRate) = (61, 2, steps, 3, 3e-3)
    (c.workers, c.plan, c.threads, c.seed, c.evaluationBatches) = (workers, plan, 2, seed, 1)
    return c
}

/// The losses of a run's first `steps` steps.
func trainingLosses(_ configuration: TrainingConfiguration, steps: Int? = nil) throws -> [Double] {
    var trainer = try Trainer(configuration)
    return try (0..<(steps ?? configuration.steps)).map { _ in try trainer.step().loss }
}

/// One worker's 20 losses, computed once per test process from a fresh seed.
struct SingleWorkerRun: Sendable {
    static let shared = try! SingleWorkerRun()
    let seed = UInt64.random(in: 0...UInt64.max)
    let losses: [Double]

    init() throws { losses = try trainingLosses(smallRun(seed: seed)) }
}

@Suite("Training: P = 4 follows P = 1, resume follows an uninterrupted run")
struct TrainingTrajectoryTests {
    /// The first 20 losses (each measured before its update) of 4 workers under every plan agree with one worker's.
    /// They are not bit-identical — the plans sum attention partials in other orders, and AdamW's m/√v magnifies
    /// the differences in near-zero gradient entries — so the bound is relative: about 1000× the drift seen over
    /// 20 steps (~10⁻⁷), far below what a wrong gradient gives (the loss moves by 0.03–0.4 in these steps).
    @Test(arguments: Plan.Kind.allCases)
    func fourWorkersFollowOneWorker(plan: Plan.Kind) throws {
        let single = SingleWorkerRun.shared
        let parallel = try trainingLosses(smallRun(workers: 4, plan: plan, seed: single.seed))
        let differences = zip(parallel, single.losses).map { abs($0 - $1) / max(1, abs($1)) }
        let worst = differences.max()!
        print("\(plan) P=4 seed \(single.seed): worst relative loss difference over 20 steps \(worst); losses "
            + "\(single.losses.first!) → \(single.losses.last!)")
        #expect(differences[0] <= 1e-6, "\(plan) seed \(single.seed): step 1 loss \(parallel[0]) vs \(single.losses[0])")
        #expect(worst <= 1e-4, "\(plan) seed \(single.seed): \(parallel) vs \(single.losses)")
        // The comparison means something only if training moves the loss (by 0.03–0.4 over these steps,
        // depending on the seed).
        #expect(single.losses.max()! - single.losses.min()! > 1e-3, "the run must actually move: \(single.losses)")
    }

    /// Stop after 4 steps, write the checkpoint, read it back, continue: the same losses, parameters and optimizer
    /// state, bit for bit, as 8 steps without stopping.
    /// The third case crosses a sequence warm-up's end (steps 1–3 on rows of 40 tokens, then 61) after the
    /// resume.
    @Test(arguments: [(1, Plan.Kind.distflash, false), (4, .distflash, false), (3, .zigzag, true)])
    func resumeReproducesTheTrajectory(workers: Int, plan: Plan.Kind, warmup: Bool) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var configuration = smallRun(workers: workers, plan: plan, steps: 8, seed: seed)
        if warmup { configuration.sequenceWarmup = .init(sequence: 40, steps: 5, batch: 3) }
        var straight = try Trainer(configuration)
        let expected = try (0..<8).map { _ in try straight.step().loss }

        var first = try Trainer(configuration)
        var resumed = try (0..<4).map { _ in try first.step().loss }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("distflash-resume-\(UUID())")
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("run.safetensors")
        try first.checkpoint().write(to: url)

        var second = try Trainer(configuration, resume: try TrainingCheckpoint(contentsOf: url))
        #expect(second.completedSteps == 4)
        resumed += try (0..<4).map { _ in try second.step().loss }
        #expect(resumed == expected, "seed \(seed)")
        #expect(second.parameters == straight.parameters, "seed \(seed)")
        #expect(second.optimizer.state == straight.optimizer.state, "seed \(seed)")
        let (a, b) = (try second.evaluate(), try straight.evaluate())
        #expect(a.loss == b.loss && a.accuracy == b.accuracy, "seed \(seed)")
        #expect(second.isFinished)
        #expect(throws: DistFlashError.self) { try second.step() }
    }

    /// A resume may change how the run executes (workers, plan, checkpointing) but not what it computes.
    @Test func resumeRefusesAnotherTrajectory() throws {
        let configuration = smallRun(steps: 4, seed: 7)
        var trainer = try Trainer(configuration)
        try trainer.step()
        let checkpoint = try trainer.checkpoint()

        var execution = configuration
        (execution.workers, execution.plan, execution.checkpoint) = (2, .ring, .none)
        let resumed = try Trainer(execution, resume: checkpoint)
        #expect(resumed.completedSteps == 1)

        var other = configuration
        other.learningRate = 1e-3
        other.sequence = 64
        do {
            _ = try Trainer(other, resume: checkpoint, checkpointName: "run.safetensors")
            Issue.record("a resume with another learning rate and sequence was accepted")
        } catch let error as DistFlashError {
            for fragment in ["run.safetensors", "--lr", "0.001", "0.003", "--seq", "64", "61"] {
                #expect(error.message.contains(fragment), "\(error.message)")
            }
        }
    }

    /// During a sequence warm-up the steps train on the short rows (their own rows per step), then on the full ones.
    @Test func sequenceWarmupTrainsShortRowsFirst() throws {
        var configuration = smallRun(steps: 4, seed: 11)
        configuration.sequenceWarmup = .init(sequence: 40, steps: 2, batch: 3)
        var trainer = try Trainer(configuration)
        let reports = try (0..<4).map { _ in try trainer.step() }
        #expect(reports.map(\.sequence) == [40, 40, 61, 61])
        #expect(reports.map(\.tokens) == [120, 120, 122, 122])
        #expect(reports.map(\.labelled) == [3 * 8, 3 * 8, 2 * 8, 2 * 8])
        let short = try #require(trainer.warmupTraining)
        #expect(short.sequenceLength == 40 && trainer.training.sequenceLength == 61)
        #expect(trainer.heldOut.sequenceLength == 61)
    }

    /// Held-out batches come from another seed stream than the training batches, and an evaluation reads the same
    /// batches every time.
    @Test func heldOutDataIsNotTrainingData() throws {
        let trainer = try Trainer(smallRun(seed: 3))
        let training = (0..<50).map { trainer.training.batch(step: $0, size: 2).tokens }
        #expect(!training.contains(trainer.heldOut.batch(step: 0, size: 2).tokens))
        let (a, b) = (try trainer.evaluate(), try trainer.evaluate())
        #expect(a.loss == b.loss && a.accuracy == b.accuracy && a.labelled == 2 * 8)
        let chance = try #require(trainer.chanceAccuracy)
        #expect(abs(chance - 1.0 / 64) < 1e-12)
    }
}
