import ArgumentParser
import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import DistFlashTrainCUDA
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension CheckpointStrategy: ExpressibleByArgument {}

/// `distflash train`: the LLaMA-style model trained sequence-parallel over P CPU workers or P GPUs.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a LLaMA-style model with its sequence split over P workers (weights replicated, gradients all-reduced).",
        discussion: """
            Settings the trajectory depends on (model, task, sequence, batch, mask, steps, learning-rate schedule, \
            clipping, seed, recall shape, sequence warm-up) are stored in every checkpoint; --resume continues with them, so a flag \
            given with --resume must agree with the checkpoint. Workers, plan, checkpointing and threads may change.
            Ctrl-C finishes the current step, saves (--save, all or nothing) and exits with status 130.
            """
    )

    // Trajectory: optional, so a resumed run can tell what was given from what was not.
    @Option(help: "Model preset: \(ModelConfig.presetNames.joined(separator: ", ")) (default tiny).") var preset: String?
    @Option(help: "Task: recall (synthetic associative recall) or text=FILE (bytes of a text file).") var task: String?
    @Option(help: "Sequence length S (default 1024).") var seq: Int?
    @Option(help: "Rows per step B (default 8).") var batch: Int?
    @Option(help: "Attention mask: causal, or window=W for a short-context contrast (default causal).") var mask: String?
    @Option(help: "Optimizer steps (default 400).") var steps: Int?
    @Option(help: "Peak learning rate (default 3e-3).") var lr: Float?
    @Option(help: "Learning-rate warm-up steps (default 10 % of --steps).") var warmup: Int?
    @Option(name: .customLong("min-lr-ratio"), help: "Cosine decay floor as a fraction of --lr (default 0.1).")
    var minLRRatio: Float?
    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay (default 0.1).") var weightDecay: Float?
    @Option(help: "Gradient clipping: max global norm (default 1).") var clip: Float?
    @Option(help: "Seed of the initial parameters and the data (default 0).") var seed: UInt64?
    @Option(help: "Recall: key-value pairs per row (default 8).") var pairs: Int?
    @Option(help: "Recall: pairs asked again per row (default all).") var queries: Int?
    @Option(help: "Recall: least query-to-answer distance (default S - 2·queries - 2·pairs, the most there is).")
    var distance: Int?
    @Option(name: .customLong("seq-warmup"), help: ArgumentHelp(
        "Sequence warm-up S0:STEPS[:ROWS]: the first STEPS steps on rows of S0 tokens (ROWS a step, default 32), or none.",
        discussion: "Default 48:(half of --steps):32 when S ≥ 192, else none."))
    var seqWarmup: String?
    @Option(help: "Recall: distinct key tokens (default: as many as pairs).") var keys: Int?
    @Option(help: "Recall: distinct value tokens; chance accuracy is 1/values (default 64).") var values: Int?

    // Execution.
    @Option(help: "CPU workers P (sequence-parallel ranks; default 1).") var workers: Int?
    @Option(help: "Train on GPUs 0..<P of this process instead of CPU workers (bf16 GEMMs, fp32 master weights, ZeRO-1).")
    var gpus: Int?
    @Option(name: .customLong("peak-tflops"), help: "The GPU's peak dense bf16 TFLOP/s, for MFU (default 989: H100 SXM).")
    var peakTFLOPS = 989.0
    @Option(help: "Plan: \(Plan.Kind.allCases.map(\.rawValue).joined(separator: ", ")) (default distflash).")
    var plan: Plan.Kind?
    @Option(help: "Activation checkpointing: none, layer or remat (default remat).") var checkpoint: CheckpointStrategy?
    @Flag(help: ArgumentHelp("GPUs: keep each layer's checkpoint in pinned host memory until the backward.",
                             discussion: "Copied out during the forward and back one layer ahead in the backward, on a "
                                 + "stream of its own, so the copies overlap the compute (layer or remat). With remat "
                                 + "the parked checkpoint also holds Q, K and V, so the backward skips their GEMMs."))
    var offload = false
    @Flag(name: .customLong("lean-weights"), help: ArgumentHelp(
        "GPUs: round each layer's bf16 weights from the fp32 masters when used, instead of keeping a bf16 copy of "
            + "the whole model.",
        discussion: "Saves 2 bytes a parameter of GPU memory, less what one layer holds (1.6 GiB at llama-1b), for "
            + "two more passes over the weights a step (0.4–0.9 % of a 32k llama-1b step on an H100)."))
    var leanWeights = false
    @Flag(name: .customLong("kernel-times"), help: ArgumentHelp(
        "GPUs: time each small kernel (norms, RoPE, SwiGLU, casts, loss) on its own.",
        discussion: "Adds one \"kernel:NAME\" entry per kernel to the step's device-time phases "
            + "(with --json: phase_ms), and \"gap:A→B\" entries: the device's time between phase A's end and "
            + "B's start (untimed work, or waiting for the host)."))
    var kernelTimes = false
    @Option(help: "CPU threads in all, shared by the workers (default all cores, or DISTFLASH_THREADS).") var threads: Int?
    @Flag(name: .customLong("no-overlap"), help: "Finish each step's communication before computing.") var noOverlap = false
    @Option(help: "Seconds a worker may wait for another before the step fails (default 120).") var timeout: Double?
    @Option(name: .customLong("eval-every"), help: "Held-out evaluation every N steps; 0 = only at the end (default 25).")
    var evalEvery: Int?
    @Option(name: .customLong("eval-batches"), help: "Held-out batches per evaluation (default 4).") var evalBatches: Int?

    // Files and output.
    @Option(help: "Write a checkpoint (safetensors) here at the end, on Ctrl-C and with --save-every.") var save: String?
    @Option(name: .customLong("save-every"), help: "Also checkpoint every N steps (needs --save).") var saveEvery: Int?
    @Option(help: "Continue from this checkpoint (same trajectory as an uninterrupted run).") var resume: String?
    @Option(help: "Write the loss / held-out accuracy curve as SVG here (updated at every evaluation).") var curve: String?
    @Flag(help: "Print one JSON object per step, then a summary object (JSON lines).") var json = false

    func validate() throws {
        if let gpus {
            guard gpus >= 1 else { throw ValidationError("--gpus \(gpus): must be ≥ 1") }
            guard workers == nil else { throw ValidationError("--gpus \(gpus) with --workers: give one of them") }
            guard threads == nil else { throw ValidationError("--threads with --gpus: the GPUs do the work") }
        }
        if offload {
            guard gpus != nil else { throw ValidationError("--offload: only the GPU trainer offloads; add --gpus P") }
            guard checkpoint != CheckpointStrategy.none else {
                throw ValidationError("--offload with --checkpoint none: none keeps every activation on the GPU; "
                    + "use layer or remat")
            }
        }
        if leanWeights, gpus == nil {
            throw ValidationError("--lean-weights: only the GPU trainer keeps bf16 weight copies; add --gpus P")
        }
        if kernelTimes, gpus == nil {
            throw ValidationError("--kernel-times: only the GPU trainer times kernels; add --gpus P")
        }
        if let saveEvery {
            guard saveEvery >= 1 else { throw ValidationError("--save-every \(saveEvery): must be ≥ 1 steps") }
            guard save != nil else { throw ValidationError("--save-every \(saveEvery): give --save FILE too") }
        }
    }

    func run() throws {
        var checkpointFile: TrainingCheckpoint?
        var configuration = TrainingConfiguration()
        if let resume {
            let file = try TrainingCheckpoint(contentsOf: URL(fileURLWithPath: resume))
            configuration = try TrainingConfiguration(trajectoryJSON: file.configuration, name: resume)
            checkpointFile = file
        }
        try apply(to: &configuration)
        let name = resume ?? "checkpoint"
        if let gpus {
            // Started by a launcher as one of several processes: this process is one rank, on GPU LOCAL_RANK.
            let launch = try LaunchEnvironment.detect(ProcessInfo.processInfo.environment).flatMap {
                $0.worldSize > 1 ? $0 : nil
            }
            let placement: DeviceTrainer.Placement
            if let launch {
                guard gpus == 1 else {
                    throw ValidationError("--gpus \(gpus) under \(launch.launcher) (\(launch.worldSize) processes): each "
                        + "process drives one GPU; pass --gpus 1, or run one process with --gpus P")
                }
                configuration.workers = launch.worldSize
                placement = .process(launch)
            } else {
                configuration.workers = gpus
                placement = .devices(try (0..<gpus).map { try CUDADevice(ordinal: $0) })
            }
            var run = GPUTrainingRun(trainer: try DeviceTrainer(configuration, placement: placement,
                                                                resume: checkpointFile, checkpointName: name),
                                     peakTFLOPS: peakTFLOPS)
            let card = try CUDADevice(ordinal: launch?.localRank ?? 0).name
            let placed = launch.map { "\($0.worldSize) processes (\($0.launcher)), one \(card) each" } ?? "\(gpus) × \(card)"
            let resources = placed + (configuration.workers > 1 ? " (\(configuration.plan.rawValue))" : "")
            try train(&run, resources: resources, chanceAccuracy: run.trainer.chanceAccuracy)
        } else {
            var trainer = try Trainer(configuration, resume: checkpointFile, checkpointName: name)
            try train(&trainer, resources: TrainingOutput.cpuResources(trainer), chanceAccuracy: trainer.chanceAccuracy)
        }
    }

    /// Steps until done or Ctrl-C, with held-out evaluations, checkpoints (`--save`, `--save-every`) and the curve.
    private func train<Run: TrainingRun>(_ run: inout Run, resources: String, chanceAccuracy: Double?) throws {
        let configuration = run.configuration
        var output = TrainingOutput(configuration: configuration, model: run.model, chanceAccuracy: chanceAccuracy,
                                    firstStep: run.completedSteps, resources: resources, json: json,
                                    quiet: !run.reportsResults)
        // Files are written by the reporting process alone; every process learns whether that worked, so a failed
        // write stops all of them together (across processes the others wait up to --timeout for it).
        func together(_ what: String, _ run: Run, _ body: () throws -> Void) throws {
            var failure: Error?
            if run.reportsResults {
                do { try body() } catch { failure = error }
            }
            if try run.anyRank(failure != nil) {
                throw failure ?? DistFlashError(.runtime, "rank 0 could not write \(what); every rank stops")
            }
        }
        // Every rank takes part in a checkpoint (the optimizer shards are gathered); one writes it.
        func write(_ path: String, _ run: Run) throws {
            let checkpoint = try run.checkpoint()
            try together(path, run) { try checkpoint.write(to: URL(fileURLWithPath: path)) }
        }
        InterruptRequest.install(notice: "Ctrl-C: finishing this step, then "
            + (save.map { "saving \($0)" } ?? "stopping (no --save: nothing will be saved)")
            + "; press Ctrl-C again to quit at once")
        output.start()

        if run.completedSteps == 0 && configuration.evaluationInterval > 0 {
            output.record(evaluation: try run.evaluate())
        }
        // Processes stop together: an interrupt seen by any of them ends the loop for all at the same step.
        while try !run.isFinished && !run.anyRank(InterruptRequest.isRequested) {
            let report = try run.step()
            let figures = try run.deviceFigures(report)
            let interval = configuration.evaluationInterval
            let evaluation = run.isFinished || (interval > 0 && report.step % interval == 0)
                ? try run.evaluate() : nil
            output.record(step: report, evaluation: evaluation, gpu: figures)
            if let save, let saveEvery, report.step % saveEvery == 0, !run.isFinished { try write(save, run) }
            if evaluation != nil { try together(curve ?? "the curve", run) { try writeCurve(output) } }
        }

        if let save { try write(save, run) }
        try together(curve ?? "the curve", run) { try writeCurve(output) }
        let interrupted = !run.isFinished
        output.finish(configuration: configuration, model: run.model, completedSteps: run.completedSteps, saved: save,
                      curve: curve, interrupted: interrupted)
        if interrupted {
            guard run.reportsResults else { throw ExitCode(130) }
            let resumeHint = save.map { ": saved \($0); continue with the same command and --resume \($0)" }
                ?? ": nothing saved (no --save)"
            FileHandle.standardError.write(Data(("interrupted after step \(run.completedSteps) of "
                + "\(configuration.steps)" + resumeHint + "\n").utf8))
            throw ExitCode(130)
        }
    }

    /// The flags that were given, over `configuration` (the defaults, or a checkpoint's settings).
    private func apply(to configuration: inout TrainingConfiguration) throws {
        if let preset { configuration.model = preset }
        if let task { configuration.task = task }
        if let seq { configuration.sequence = seq }
        if let batch { configuration.batch = batch }
        if let mask { configuration.mask = mask }
        if let steps {
            configuration.steps = steps
            // A fresh run's warm-up follows its length unless given; a resumed one keeps its own.
            if resume == nil { configuration.warmupSteps = steps / 10 }
        }
        if let warmup { configuration.warmupSteps = warmup }
        if let lr { configuration.learningRate = lr }
        if let minLRRatio { configuration.minimumLearningRateRatio = minLRRatio }
        if let weightDecay { configuration.weightDecay = weightDecay }
        if let clip { configuration.maxGradientNorm = clip }
        if let seed { configuration.seed = seed }
        if let pairs { configuration.recall.pairs = pairs }
        if let queries { configuration.recall.queries = queries }
        if let seqWarmup {
            configuration.sequenceWarmup = seqWarmup == "none" ? nil : try .init(parsing: seqWarmup)
        } else if resume == nil {
            // Long rows learn retrieval far faster after a short-row start (see SequenceWarmup).
            configuration.sequenceWarmup = configuration.sequence >= 192 && configuration.steps >= 3
                ? .init(sequence: 48, steps: configuration.steps / 2) : nil
        }
        if let distance { configuration.recall.minimumDistance = distance }
        if let keys { configuration.recall.keyCount = keys }
        if let values { configuration.recall.valueCount = values }
        if let workers { configuration.workers = workers }
        if let plan { configuration.plan = plan }
        if let checkpoint { configuration.checkpoint = checkpoint }
        configuration.offload = offload
        configuration.leanWeights = leanWeights
        configuration.kernelTimes = kernelTimes
        configuration.threads = threads
        configuration.overlap = !noOverlap
        if let timeout { configuration.timeout = timeout }
        if let evalEvery { configuration.evaluationInterval = evalEvery }
        if let evalBatches { configuration.evaluationBatches = evalBatches }
    }

    private func writeCurve(_ output: TrainingOutput) throws {
        guard let curve else { return }
        try CurveSVG.write(output.curvePoints, title: output.title, chanceAccuracy: output.chanceAccuracy,
                           to: URL(fileURLWithPath: curve))
    }
}

/// The run as the user sees it: a live progress line (or JSON lines), the permanent lines at evaluations, the
/// curve's points and the final summary.
struct TrainingOutput {
    let json: Bool
    /// Prints nothing (a rank of a multi-process run other than rank 0).
    let quiet: Bool
    let title: String
    let header: String
    let chanceAccuracy: Double?
    let totalSteps: Int
    let firstStep: Int
    /// Whether standard error is a terminal (only then the progress line is redrawn in place).
    let live = isatty(STDERR_FILENO) == 1
    private let clock = ContinuousClock.now
    private var trainingSeconds = 0.0, tokens = 0
    private var lastStep: StepReport?
    private var lastEvaluation: Evaluation?
    /// By parameter version k (updates applied): the training loss measured at θ_k (reported by step k + 1) and
    /// the held-out accuracy at θ_k.
    private var losses: [Int: Double] = [:], accuracies: [Int: Double] = [:]

    /// `resources`: what runs it, e.g. "4 workers (distflash), 2 threads each" or "4 GPUs (distflash) …".
    init(configuration c: TrainingConfiguration, model: ModelConfig, chanceAccuracy: Double?, firstStep: Int,
         resources: String, json: Bool, quiet: Bool = false) {
        (self.json, self.quiet) = (json, quiet)
        self.chanceAccuracy = chanceAccuracy
        totalSteps = c.steps
        self.firstStep = firstStep
        let parallel = c.workers == 1 ? "1 worker" : "\(c.workers) workers (\(c.plan.rawValue))"
        let warmup = c.sequenceWarmup.map { " (steps 1–\($0.steps) at S = \($0.sequence))" } ?? ""
        title = "\(c.model) on \(c.taskName), S = \(c.sequence)\(warmup), \(c.mask) mask, \(parallel)"
        header = "training \(c.model) (\(model)) on \(c.task) · S=\(c.sequence) B=\(c.batch) mask \(c.mask)"
            + (c.sequenceWarmup.map { " · warm-up: \($0.steps) steps of \($0.batch) rows at S=\($0.sequence)" } ?? "")
            + " · \(resources), checkpoint \(c.checkpoint)\(c.offload ? " (offloaded)" : "")"
            + (c.leanWeights ? ", lean weights" : "")
            + " · steps \(firstStep)→\(c.steps), lr \(c.learningRate) "
            + "(warm-up \(c.warmupSteps), cosine to ×\(c.minimumLearningRateRatio)), clip \(c.maxGradientNorm), "
            + "seed \(c.seed)" + (chanceAccuracy.map { " · chance accuracy \(Self.percent($0))" } ?? "")
    }

    static func cpuResources(_ trainer: Trainer) -> String {
        let c = trainer.configuration
        let parallel = c.workers == 1 ? "1 worker" : "\(c.workers) workers (\(c.plan.rawValue))"
        return "\(parallel), \(trainer.threadsPerRank) thread\(trainer.threadsPerRank == 1 ? "" : "s") each"
    }

    var curvePoints: [CurvePoint] {
        Set(losses.keys).union(accuracies.keys).sorted().map {
            CurvePoint(step: $0, loss: losses[$0] ?? .nan, accuracy: accuracies[$0])
        }
    }

    func start() {
        if !json && !quiet { Self.write(header) }
    }

    mutating func record(evaluation: Evaluation) {
        accuracies[evaluation.step] = evaluation.accuracy
        lastEvaluation = evaluation
        if quiet { return }
        if json {
            emit(["event": "evaluation", "step": evaluation.step, "held_out_loss": evaluation.loss,
                  "held_out_accuracy": evaluation.accuracy, "seconds": evaluation.seconds])
        } else {
            permanent("step \(evaluation.step)/\(totalSteps)  held-out loss \(Self.fixed(evaluation.loss)), accuracy "
                + Self.percent(evaluation.accuracy) + " (\(evaluation.labelled) answers)")
        }
    }

    /// `gpu`: the step's model FLOP utilisation and the largest device memory any GPU held, on GPU runs.
    mutating func record(step report: StepReport, evaluation: Evaluation?, gpu: (mfu: Double, peakBytes: Int)? = nil) {
        losses[report.step - 1] = report.loss
        trainingSeconds += report.seconds
        tokens += report.tokens
        lastStep = report
        if let evaluation {
            accuracies[evaluation.step] = evaluation.accuracy
            lastEvaluation = evaluation
        }
        if quiet { return }
        if json {
            var object: [String: Any] = [
                "event": "step", "step": report.step, "loss": report.loss, "accuracy": report.accuracy,
                "grad_norm": Double(report.gradientNorm), "lr": Double(report.learningRate),
                "tokens_per_s": report.tokensPerSecond, "step_ms": report.seconds * 1000, "eta_s": eta,
                "sequence": report.sequence,
            ]
            if let evaluation {
                object["held_out_loss"] = evaluation.loss
                object["held_out_accuracy"] = evaluation.accuracy
            }
            if let gpu { (object["mfu"], object["device_peak_bytes"]) = (gpu.mfu, gpu.peakBytes) }
            if !report.phaseSeconds.isEmpty { object["phase_ms"] = report.phaseSeconds.mapValues { $0 * 1000 } }
            emit(object)
            return
        }
        var line = progress(report)
        if let gpu {
            line += String(format: "  MFU %.1f %%  peak %.1f GiB", gpu.mfu * 100, Double(gpu.peakBytes) / Double(1 << 30))
        }
        if report.seconds > 0, !report.phaseSeconds.isEmpty {  // where the step's time went, on the device
            line += "  (" + report.phaseSeconds.sorted { $0.value > $1.value }.map {
                "\($0.key) \(Int((100 * $0.value / report.seconds).rounded())) %"
            }.joined(separator: ", ") + ")"
        }
        if evaluation != nil {
            permanent(line)
        } else if live {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        }
    }

    func finish(configuration: TrainingConfiguration, model: ModelConfig, completedSteps: Int, saved: String?,
                curve: String?, interrupted: Bool) {
        let seconds = (ContinuousClock.now - clock).seconds
        if quiet { return }
        if json {
            var object: [String: Any] = [
                "event": "summary", "steps": completedSteps, "total_steps": totalSteps,
                "interrupted": interrupted, "seconds": seconds, "training_seconds": trainingSeconds,
                "tokens_per_s": trainingSeconds > 0 ? Double(tokens) / trainingSeconds : 0,
                "parameters": model.parameterCount, "workers": configuration.workers,
                "plan": configuration.plan.rawValue, "sequence": configuration.sequence,
                "checkpoint": configuration.checkpoint.rawValue,
            ]
            if let lastStep { object["final_loss"] = lastStep.loss; object["final_accuracy"] = lastStep.accuracy }
            if let lastEvaluation {
                object["held_out_loss"] = lastEvaluation.loss
                object["held_out_accuracy"] = lastEvaluation.accuracy
            }
            if let chanceAccuracy { object["chance_accuracy"] = chanceAccuracy }
            if let saved { object["saved"] = saved }
            if let curve { object["curve"] = curve }
            emit(object)
            return
        }
        var summary = "\(interrupted ? "stopped" : "done") after step \(completedSteps)/\(totalSteps) in "
            + Self.duration(seconds)
        if let lastEvaluation {
            summary += " · held-out accuracy \(Self.percent(lastEvaluation.accuracy)) at step \(lastEvaluation.step)"
        }
        if trainingSeconds > 0 { summary += " · \(Self.rate(Double(tokens) / trainingSeconds)) tokens/s" }
        if let saved { summary += " · saved \(saved)" }
        if let curve { summary += " · curve \(curve)" }
        permanent(summary)
    }

    // MARK: Formatting

    private var eta: Double {
        guard let lastStep, lastStep.step > firstStep else { return 0 }
        let seconds = (ContinuousClock.now - clock).seconds
        return seconds / Double(lastStep.step - firstStep) * Double(totalSteps - lastStep.step)
    }

    private func progress(_ report: StepReport) -> String {
        var line = "step \(report.step)/\(totalSteps)  S=\(report.sequence)  loss \(Self.fixed(report.loss))  accuracy "
            + Self.percent(report.accuracy)
        if let lastEvaluation { line += "  held-out \(Self.percent(lastEvaluation.accuracy)) @\(lastEvaluation.step)" }
        line += "  \(Self.rate(Double(tokens) / max(trainingSeconds, 1e-9))) tok/s  ETA \(Self.duration(eta))"
        return line
    }

    /// A line that stays: clears the live line first.
    private func permanent(_ line: String) {
        if live { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        Self.write(line)
    }

    private func emit(_ object: [String: Any]) {
        let finite = object.mapValues { value -> Any in
            if let number = value as? Double, !number.isFinite { return NSNull() }
            return value
        }
        let data = try! JSONSerialization.data(withJSONObject: finite, options: [.sortedKeys, .withoutEscapingSlashes])
        Self.write(String(decoding: data, as: UTF8.self))
    }

    /// One line on standard output, unbuffered (so a pipe sees each step as it ends).
    static func write(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    static func fixed(_ value: Double) -> String { String(format: "%.4f", value) }
    static func percent(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
    static func rate(_ value: Double) -> String {
        value >= 1000 ? String(format: "%.1fk", value / 1000) : String(format: "%.0f", value)
    }
    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        return total >= 60 ? "\(total / 60)m\(String(format: "%02d", total % 60))s" : "\(total)s"
    }
}
