import DistFlashAttn
import Foundation

/// Everything a training run is: what it computes (the *trajectory* settings, stored in every checkpoint and
/// fixed for a resumed run) and how it is executed (workers, plan, checkpointing, threads, evaluation — free to
/// change between a run and its resume, since they change the arithmetic at most by rounding).
///
/// `validate()` checks every value and throws `invalidProblem` naming the setting, its flag, the value and the
/// rule.
public struct TrainingConfiguration: Sendable, Equatable, Codable {
    // MARK: Trajectory (stored in checkpoints)

    /// Model preset: one of `ModelConfig.presetNames`.
    public var model = "tiny"
    /// `recall` (the synthetic associative-recall task) or `text=FILE` (bytes of a text file).
    public var task = "recall"
    /// S, tokens per row.
    public var sequence = 1024
    /// B, rows per step.
    public var batch = 8
    /// The attention mask: `causal` or `window=W` (a short-context model, for contrast).
    public var mask = "causal"
    /// Optimizer updates of the whole run (the cosine decay ends here).
    public var steps = 400
    /// Peak learning rate η.
    public var learningRate: Float = 3e-3
    /// Linear warm-up steps before η is reached.
    public var warmupSteps = 40
    /// The cosine decays to this fraction of η.
    public var minimumLearningRateRatio: Float = 0.1
    /// AdamW decoupled weight decay λ (matrices only).
    public var weightDecay: Float = 0.1
    /// Global gradient-norm clipping threshold.
    public var maxGradientNorm: Float = 1
    /// Seed of the initial parameters and of the data.
    public var seed: UInt64 = 0
    /// Shape of the recall task (ignored for text).
    public var recall = RecallSettings()
    /// Train the first steps on shorter rows (nil: every step at `sequence`).
    public var sequenceWarmup: SequenceWarmup?

    /// Whether step `step` (0-based) trains on the sequence warm-up's short rows.
    public func isWarmup(step: Int) -> Bool { step < (sequenceWarmup?.steps ?? 0) }

    // MARK: Execution (may differ between a run and its resume)

    /// P, sequence-parallel ranks (threads of this process).
    public var workers = 1
    /// How the ranks share the attention.
    public var plan: Plan.Kind = .distflash
    /// What the forward keeps for the backward.
    public var checkpoint: CheckpointStrategy = .remat
    /// GPUs: keep each layer's checkpoint in pinned host memory until the backward needs it.
    public var offload = false
    /// GPUs: round each layer's bf16 weights when used instead of keeping a bf16 copy of the whole model.
    public var leanWeights = false
    /// GPUs: report each small kernel's device time in the step's phases.
    public var kernelTimes = false
    /// CPU threads in all (nil: `CPUBackend.defaultWorkers`); each rank gets max(1, threads / P).
    public var threads: Int?
    /// Overlap each step's transfers with its compute.
    public var overlap = true
    /// Seconds a rank may wait for another before the step fails.
    public var timeout: Double = 120
    /// Evaluate on held-out data every this many steps (0: only at the end).
    public var evaluationInterval = 25
    /// Held-out batches (B rows each) per evaluation.
    public var evaluationBatches = 4

    public init() {}

    /// The recall task's shape; nil fields take a default that depends on S (see `resolved(sequence:)`).
    public struct RecallSettings: Sendable, Equatable, Codable {
        /// Key–value pairs per row (default min(8, (S − 1)/4)).
        public var pairs: Int?
        /// Pairs asked again at the end (default: every pair).
        public var queries: Int?
        /// Least distance from a query to its answer (default S − 2·queries − 2·pairs, the most there is: the pairs
        /// sit right after the begin token, the queries at the end, filler between).
        public var minimumDistance: Int?
        /// Distinct key tokens (default: as many as pairs, so every row uses every key in a new order).
        public var keyCount: Int?
        /// Distinct value tokens: chance accuracy is 1/values.
        public var valueCount = 64
        /// Distinct filler tokens. One: the filler carries no information and a model learns to ignore it at once,
        /// so what is learnt is the retrieval itself.
        public var fillerCount = 1

        public init() {}

        /// Every default filled in for sequence length `sequence`.
        public func resolved(sequence: Int) -> RecallSettings {
            var settings = self
            let pairs = self.pairs ?? max(1, min(8, (sequence - 1) / 4))
            let queries = self.queries ?? pairs
            settings.pairs = pairs
            settings.queries = queries
            settings.minimumDistance = minimumDistance ?? max(1, sequence - 2 * queries - 2 * pairs)
            settings.keyCount = keyCount ?? pairs
            return settings
        }
    }

    /// Sequence-length warm-up: the first `steps` steps train on rows of `sequence` tokens (`batch` rows a step),
    /// the rest at the full length. A retrieval circuit (an induction head) forms within a few hundred steps on
    /// short rows but hardly at all on long ones, where every query starts out spread over S positions; once
    /// formed it carries over to the long rows, which then take a few dozen steps (the usual recipe for long
    /// context: train short, then extend). The recall task keeps its pairs, queries and vocabulary and places the
    /// pairs as far from the queries as the short rows allow.
    public struct SequenceWarmup: Sendable, Equatable, Codable, CustomStringConvertible {
        public var sequence: Int
        public var steps: Int
        public var batch: Int

        public init(sequence: Int, steps: Int, batch: Int = 32) {
            (self.sequence, self.steps, self.batch) = (sequence, steps, batch)
        }

        /// `S0:N` or `S0:N:B0` (B0 default 32).
        public init(parsing text: String) throws {
            let fields = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
            guard (2...3).contains(fields.count), !fields.contains(nil) else {
                throw DistFlashError(.invalidProblem, "sequence warm-up (--seq-warmup) = \(text): write S0:STEPS or "
                    + "S0:STEPS:ROWS (e.g. 48:200), or none")
            }
            self.init(sequence: fields[0]!, steps: fields[1]!, batch: fields.count == 3 ? fields[2]! : 32)
        }

        public var description: String { "\(sequence):\(steps):\(batch)" }
    }

    /// Only the trajectory settings are encoded (a checkpoint's `config`); the others keep their defaults when
    /// decoded.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, task, sequence, batch, mask, steps, seed, recall
        case sequenceWarmup = "sequence_warmup"
        case learningRate = "learning_rate", warmupSteps = "warmup_steps"
        case minimumLearningRateRatio = "minimum_learning_rate_ratio", weightDecay = "weight_decay"
        case maxGradientNorm = "max_gradient_norm"

        /// The `distflash train` flag that sets this value.
        var flag: String {
            switch self {
            case .model: "--preset"
            case .task: "--task"
            case .sequence: "--seq"
            case .batch: "--batch"
            case .mask: "--mask"
            case .steps: "--steps"
            case .seed: "--seed"
            case .recall: "--pairs/--queries/--distance/--keys/--values"
            case .sequenceWarmup: "--seq-warmup"
            case .learningRate: "--lr"
            case .warmupSteps: "--warmup"
            case .minimumLearningRateRatio: "--min-lr-ratio"
            case .weightDecay: "--weight-decay"
            case .maxGradientNorm: "--clip"
            }
        }
    }
}

// MARK: Validation

extension TrainingConfiguration {
    /// Throws `invalidProblem` for the first setting that breaks its rule, naming it, its flag and its value.
    public func validate() throws {
        func fail(_ what: String, _ flag: String, _ value: Any, _ rule: String) -> DistFlashError {
            DistFlashError(.invalidProblem, "\(what) (\(flag)) = \(value): \(rule)")
        }
        guard ModelConfig.presetNames.contains(model) else {
            throw fail("model", "--preset", model, "must be one of \(ModelConfig.presetNames.joined(separator: ", "))")
        }
        _ = try taskKind()
        guard sequence >= 1 else { throw fail("sequence length", "--seq", sequence, "must be ≥ 1") }
        guard batch >= 1 else { throw fail("batch", "--batch", batch, "must be ≥ 1 rows") }
        _ = try attentionMask()
        guard steps >= 1 else { throw fail("steps", "--steps", steps, "must be ≥ 1") }
        guard learningRate.isFinite, learningRate > 0 else {
            throw fail("learning rate", "--lr", learningRate, "must be finite and > 0")
        }
        guard (0...steps).contains(warmupSteps) else {
            throw fail("warm-up", "--warmup", warmupSteps, "must be in 0...steps (\(steps))")
        }
        guard (0...1).contains(minimumLearningRateRatio) else {
            throw fail("minimum learning-rate ratio", "--min-lr-ratio", minimumLearningRateRatio, "must be in [0, 1]")
        }
        guard weightDecay.isFinite, weightDecay >= 0 else {
            throw fail("weight decay", "--weight-decay", weightDecay, "must be finite and ≥ 0")
        }
        guard maxGradientNorm.isFinite, maxGradientNorm > 0 else {
            throw fail("gradient clipping norm", "--clip", maxGradientNorm, "must be finite and > 0")
        }
        guard workers >= 1 else { throw fail("workers", "--workers", workers, "must be ≥ 1") }
        guard workers <= sequence else {
            throw fail("workers", "--workers", workers, "must be ≤ the sequence length S = \(sequence), so every "
                + "worker holds at least one token")
        }
        if let threads, threads < 1 { throw fail("threads", "--threads", threads, "must be ≥ 1") }
        guard timeout.isFinite, timeout > 0 else { throw fail("timeout", "--timeout", timeout, "must be > 0 s") }
        guard evaluationInterval >= 0 else {
            throw fail("evaluation interval", "--eval-every", evaluationInterval, "must be ≥ 0 steps (0: only at the end)")
        }
        guard evaluationBatches >= 1 else {
            throw fail("evaluation batches", "--eval-batches", evaluationBatches, "must be ≥ 1")
        }
        if case .recall = try taskKind() { _ = try recallTask(seed: seed) }
        if let warmup = sequenceWarmup {
            let flag = "--seq-warmup", value = warmup.description
            guard warmup.sequence >= 1, warmup.sequence < sequence else {
                throw fail("sequence warm-up", flag, value, "its length must be in 1..<S (S = \(sequence))")
            }
            guard warmup.steps >= 1, warmup.steps < steps else {
                throw fail("sequence warm-up", flag, value, "its steps must be in 1..<steps (\(steps)), so the run "
                    + "ends at the full length")
            }
            guard warmup.batch >= 1 else { throw fail("sequence warm-up", flag, value, "its rows must be ≥ 1") }
            guard workers <= warmup.sequence else {
                throw fail("sequence warm-up", flag, value, "its length must be ≥ the workers (\(workers)), so every "
                    + "worker holds a token")
            }
            if case .recall = try taskKind() {
                do { _ = try warmupRecallTask(warmup, seed: seed) } catch let error as DistFlashError {
                    throw DistFlashError(error.code, "sequence warm-up (--seq-warmup) = \(value): " + error.message)
                }
            }
        }
    }

    /// What `task` names.
    public enum TaskKind: Sendable, Equatable {
        case recall
        case text(path: String)
    }

    /// Parses `task`: `recall` or `text=FILE`.
    public func taskKind() throws -> TaskKind {
        if task == "recall" { return .recall }
        if task.hasPrefix("text=") {
            let path = String(task.dropFirst("text=".count))
            guard !path.isEmpty else {
                throw DistFlashError(.invalidProblem, "task (--task) = \(task): give the text file's path, text=FILE")
            }
            return .text(path: path)
        }
        throw DistFlashError(.invalidProblem, "task (--task) = \(task): must be recall or text=FILE")
    }

    /// The name stored in a checkpoint's `task` metadata: `recall` or `text`.
    public var taskName: String { task.hasPrefix("text=") ? "text" : task }

    /// Parses `mask`: `causal` or `window=W`.
    public func attentionMask() throws -> AttentionMask {
        let kind: AttentionMask.Kind
        do { kind = try AttentionMask.parseKind(mask) } catch {
            throw DistFlashError(.invalidProblem, "mask (--mask) = \(mask): must be causal or window=W (W ≥ 1)")
        }
        guard kind != .full else {
            throw DistFlashError(.invalidProblem, "mask (--mask) = full: a language model must not see the tokens it "
                + "predicts; use causal or window=W")
        }
        return AttentionMask(kind)
    }

    /// The recall task of this configuration with data seed `seed`.
    func recallTask(seed: UInt64) throws -> RecallTask {
        let r = recall.resolved(sequence: sequence)
        do {
            return try RecallTask(sequenceLength: sequence, pairs: r.pairs!, queries: r.queries!,
                                  minimumDistance: r.minimumDistance!, keyCount: r.keyCount!,
                                  valueCount: r.valueCount, fillerCount: r.fillerCount, seed: seed)
        } catch let error as DistFlashError {
            throw DistFlashError(error.code, error.message + " (flags --seq, --pairs, --queries, --distance, --keys, "
                + "--values)")
        }
    }

    /// The recall task of the warm-up: the same pairs, queries and vocabulary on rows of the warm-up's length, the
    /// pairs as far from the queries as those rows allow.
    func warmupRecallTask(_ warmup: SequenceWarmup, seed: UInt64) throws -> RecallTask {
        let r = recall.resolved(sequence: sequence)
        return try RecallTask(sequenceLength: warmup.sequence, pairs: r.pairs!, queries: r.queries!,
                              minimumDistance: max(1, warmup.sequence - 2 * r.queries! - 2 * r.pairs!),
                              keyCount: r.keyCount!, valueCount: r.valueCount, fillerCount: r.fillerCount, seed: seed)
    }
}

// MARK: Data

extension TrainingConfiguration {
    /// The seed of the held-out stream: the same task, drawn from an unrelated stream, so evaluation batches are
    /// never training batches (for text, windows of the same file at other offsets).
    public static func heldOutSeed(_ seed: UInt64) -> UInt64 { seed ^ 0xE7A1_5EED_0000_0001 }

    /// The training data, the warm-up's training data (short rows, if any), the held-out data (full length), and
    /// the chance accuracy where the task defines one.
    public func dataSources() throws
        -> (training: any BatchSource, warmup: (any BatchSource)?, heldOut: any BatchSource, chance: Double?) {
        switch try taskKind() {
        case .recall:
            let training = try recallTask(seed: seed)
            let warmup = try sequenceWarmup.map { try warmupRecallTask($0, seed: seed) }
            return (training, warmup, try recallTask(seed: Self.heldOutSeed(seed)), training.chanceAccuracy)
        case .text(let path):
            let url = URL(fileURLWithPath: path)
            let training = try TextDataset(contentsOf: url, sequenceLength: sequence, seed: seed)
            let warmup = try sequenceWarmup.map {
                try TextDataset(bytes: training.bytes, sequenceLength: $0.sequence, seed: seed, name: path)
            }
            let heldOut = try TextDataset(bytes: training.bytes, sequenceLength: sequence,
                                          seed: Self.heldOutSeed(seed), name: path)
            return (training, warmup, heldOut, nil)
        }
    }
}

// MARK: Checkpoint configuration

extension TrainingConfiguration {
    /// The trajectory settings as JSON text (sorted keys; recall defaults filled in), as stored in checkpoints.
    public func trajectoryJSON() throws -> String {
        var resolved = self
        resolved.recall = recall.resolved(sequence: sequence)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(resolved), as: UTF8.self)
    }

    /// A configuration from a checkpoint's `config` text: its trajectory settings, execution settings at their
    /// defaults. `name` (the file) appears in errors.
    public init(trajectoryJSON text: String, name: String) throws {
        do {
            self = try JSONDecoder().decode(TrainingConfiguration.self, from: Data(text.utf8))
        } catch {
            throw DistFlashError(.invalidFile, "\(name): the checkpoint's config is not a training configuration "
                + "(\(error)); was it written by `distflash train`?")
        }
    }

    /// The trajectory settings where `self` differs from `other`, each as "flag: ours vs theirs".
    public func trajectoryDifferences(from other: TrainingConfiguration) throws -> [String] {
        func fields(_ configuration: TrainingConfiguration) throws -> [String: String] {
            let object = try JSONSerialization.jsonObject(with: Data(configuration.trajectoryJSON().utf8))
            var result: [String: String] = [:]
            for (key, value) in object as? [String: Any] ?? [:] {
                if let nested = value as? [String: Any] {
                    for (inner, v) in nested { result["\(key).\(inner)"] = "\(v)" }
                } else {
                    result[key] = "\(value)"
                }
            }
            return result
        }
        let (ours, theirs) = (try fields(self), try fields(other))
        return Set(ours.keys).union(theirs.keys).sorted().compactMap { key in
            guard ours[key] != theirs[key] else { return nil }
            let top = String(key.split(separator: ".")[0])
            let flag = CodingKeys(rawValue: top)?.flag ?? key
            return "\(key) (\(flag)): \(ours[key] ?? "unset") here, \(theirs[key] ?? "unset") in the checkpoint"
        }
    }
}
