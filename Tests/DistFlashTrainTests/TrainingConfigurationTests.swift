import DistFlashAttn
import Foundation
import Testing
@testable import DistFlashTrain

@Suite("Training configuration: validation and the checkpoint's trajectory settings")
struct TrainingConfigurationTests {
    /// A bad setting, and fragments its error must contain (the flag and the value).
    struct BadSetting: Sendable, CustomTestStringConvertible {
        let change: @Sendable (inout TrainingConfiguration) -> Void
        let fragments: [String]
        var testDescription: String { fragments.joined(separator: " ") }

        init(_ fragments: [String], _ change: @escaping @Sendable (inout TrainingConfiguration) -> Void) {
            (self.fragments, self.change) = (fragments, change)
        }
    }

    static let badSettings: [BadSetting] = [
        BadSetting(["--preset", "huge", "tiny"]) { $0.model = "huge" },
        BadSetting(["--task", "speech", "text=FILE"]) { $0.task = "speech" },
        BadSetting(["--task", "text="]) { $0.task = "text=" },
        BadSetting(["--seq", "0"]) { $0.sequence = 0 },
        BadSetting(["--batch", "-2"]) { $0.batch = -2 },
        BadSetting(["--mask", "full"]) { $0.mask = "full" },
        BadSetting(["--mask", "window=0"]) { $0.mask = "window=0" },
        BadSetting(["--mask", "sideways"]) { $0.mask = "sideways" },
        BadSetting(["--steps", "0"]) { $0.steps = 0 },
        BadSetting(["--lr", "-0.1"]) { $0.learningRate = -0.1 },
        BadSetting(["--lr", "nan"]) { $0.learningRate = .nan },
        BadSetting(["--warmup", "401", "400"]) { $0.warmupSteps = 401 },
        BadSetting(["--min-lr-ratio", "1.5"]) { $0.minimumLearningRateRatio = 1.5 },
        BadSetting(["--weight-decay", "-1"]) { $0.weightDecay = -1 },
        BadSetting(["--clip", "0"]) { $0.maxGradientNorm = 0 },
        BadSetting(["--workers", "0"]) { $0.workers = 0 },
        BadSetting(["--workers", "2000", "1024"]) { $0.workers = 2000 },
        BadSetting(["--threads", "0"]) { $0.threads = 0 },
        BadSetting(["--timeout", "-1"]) { $0.timeout = -1 },
        BadSetting(["--eval-every", "-5"]) { $0.evaluationInterval = -5 },
        BadSetting(["--eval-batches", "0"]) { $0.evaluationBatches = 0 },
        BadSetting(["--distance", "2000"]) { $0.recall.minimumDistance = 2000 },
        BadSetting(["queries", "--queries", "40"]) { $0.recall.queries = 40 },
        BadSetting(["key count", "--keys", "4"]) { $0.recall.keyCount = 4 },
        BadSetting(["--seq-warmup", "2000:10:32", "S = 1024"]) { $0.sequenceWarmup = .init(sequence: 2000, steps: 10) },
        BadSetting(["--seq-warmup", "48:400:32", "steps (400)"]) { $0.sequenceWarmup = .init(sequence: 48, steps: 400) },
        BadSetting(["--seq-warmup", "48:10:0"]) { $0.sequenceWarmup = .init(sequence: 48, steps: 10, batch: 0) },
        BadSetting(["--seq-warmup", "20:10:32", "too short"]) { $0.sequenceWarmup = .init(sequence: 20, steps: 10) },
    ]

    @Test(arguments: badSettings)
    func badSettingsNameTheFlagAndTheValue(_ bad: BadSetting) throws {
        var configuration = TrainingConfiguration()
        try configuration.validate()
        bad.change(&configuration)
        do {
            try configuration.validate()
            Issue.record("accepted: \(bad.fragments)")
        } catch let error as DistFlashError {
            #expect(error.code == .invalidProblem)
            for fragment in bad.fragments {
                #expect(error.message.contains(fragment), "'\(fragment)' missing from: \(error.message)")
            }
        }
        #expect(throws: DistFlashError.self) { _ = try Trainer(configuration) }
    }

    @Test func missingTextFileIsNamed() throws {
        var configuration = TrainingConfiguration()
        configuration.task = "text=/nonexistent/corpus.txt"
        #expect(throws: DistFlashError.self) { try Trainer(configuration) }
        do { _ = try Trainer(configuration) } catch let error as DistFlashError {
            #expect(error.code == .invalidFile)
            #expect(error.message.contains("/nonexistent/corpus.txt"))
        }
    }

    /// The checkpoint keeps the trajectory settings (recall defaults resolved), not the execution settings.
    @Test func trajectoryJSONRoundTrips() throws {
        var configuration = TrainingConfiguration()
        (configuration.sequence, configuration.learningRate, configuration.seed) = (777, 1.7e-3, .max)
        (configuration.workers, configuration.plan, configuration.checkpoint) = (3, .ulysses, .none)
        let text = try configuration.trajectoryJSON()
        let decoded = try TrainingConfiguration(trajectoryJSON: text, name: "x")
        #expect(try decoded.trajectoryDifferences(from: configuration).isEmpty)
        #expect(decoded.learningRate == 1.7e-3 && decoded.seed == .max && decoded.sequence == 777)
        #expect(decoded.recall.pairs == 8 && decoded.recall.queries == 8 && decoded.recall.keyCount == 8)
        #expect(decoded.recall.minimumDistance == 777 - 2 * 8 - 2 * 8)
        #expect(decoded.sequenceWarmup == nil)
        #expect(decoded.workers == 1 && decoded.plan == .distflash && decoded.checkpoint == .remat)
        #expect(!text.contains("workers"))

        var other = decoded
        (other.steps, other.recall.pairs) = (301, 5)
        let differences = try other.trajectoryDifferences(from: decoded)
        #expect(differences.count == 2, "\(differences)")
        #expect(differences.contains { $0.contains("--steps") && $0.contains("301") && $0.contains("400") })
        #expect(differences.contains { $0.contains("recall.pairs") && $0.contains("5") && $0.contains("8") })

        other = decoded
        other.sequenceWarmup = .init(sequence: 48, steps: 100)
        let warmupDifferences = try other.trajectoryDifferences(from: decoded)
        #expect(warmupDifferences.count == 3 && warmupDifferences.allSatisfy { $0.contains("--seq-warmup") },
                "\(warmupDifferences)")
        #expect(try TrainingConfiguration(trajectoryJSON: other.trajectoryJSON(), name: "z").sequenceWarmup
                == other.sequenceWarmup)

        #expect(throws: DistFlashError.self) { try TrainingConfiguration(trajectoryJSON: "{\"model\": 3}", name: "y") }
    }

    @Test func sequenceWarmupParses() throws {
        #expect(try TrainingConfiguration.SequenceWarmup(parsing: "48:200") == .init(sequence: 48, steps: 200, batch: 32))
        #expect(try TrainingConfiguration.SequenceWarmup(parsing: "64:10:8") == .init(sequence: 64, steps: 10, batch: 8))
        for bad in ["48", "48:x", "48:1:2:3", ""] {
            #expect(throws: DistFlashError.self, "\(bad)") { try TrainingConfiguration.SequenceWarmup(parsing: bad) }
        }
    }
}
