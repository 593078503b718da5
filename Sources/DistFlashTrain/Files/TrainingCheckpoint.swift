import DistFlashAttn
import Foundation

/// Everything a run needs to continue exactly where it stopped, in one safetensors file:
/// ```
///  <HF name>                    F32  model parameter (e.g. model.layers.0.self_attn.q_proj.weight)
///  optimizer.m.<HF name>        F32  AdamW first moment, same shape
///  optimizer.v.<HF name>        F32  AdamW second moment, same shape
///  __metadata__  format = pt, checkpoint_version = 1, step, optimizer_step, seed, task, config (JSON text)
/// ```
/// Values are stored as F32 bit for bit, and the data of step t is a pure function of (seed, t), so a run resumed
/// from here follows the same loss trajectory as one that never stopped. `format = pt` lets Hugging Face
/// `transformers` load the parameters; it reports the `optimizer.*` tensors as unused keys.
public struct TrainingCheckpoint: Sendable, Equatable {
    /// The model's tensors, in the model's order.
    public var parameters: Parameters
    /// AdamW's moments over all parameters (ZeRO-1 ranks: `AdamWState.gathered` first) and its step.
    public var optimizer: AdamWState
    /// Training steps completed; the next batch is the data source's batch for this step.
    public var step: Int
    /// The seed of the data (and of the initialisation).
    public var seed: UInt64
    /// The task's name ("recall", "text", …).
    public var task: String
    /// The run's configuration as JSON text, stored verbatim.
    public var configuration: String

    static let version = "1"
    static let firstMomentPrefix = "optimizer.m.", secondMomentPrefix = "optimizer.v."

    /// Throws `shapeMismatch` unless `optimizer` covers every parameter value (`0..<parameters.scalarCount`),
    /// `invalidProblem` if `step` < 0.
    public init(parameters: Parameters, optimizer: AdamWState, step: Int, seed: UInt64, task: String,
                configuration: String) throws {
        guard optimizer.shard == 0..<parameters.scalarCount else {
            throw DistFlashError(.shapeMismatch, "checkpoint: the optimizer state covers flat range "
                + "\(optimizer.shard), the parameters 0..<\(parameters.scalarCount); gather the ZeRO-1 shards "
                + "(AdamWState.gathered) before saving")
        }
        guard step >= 0 else { throw DistFlashError(.invalidProblem, "checkpoint: step = \(step) must be ≥ 0") }
        (self.parameters, self.optimizer, self.step, self.seed, self.task, self.configuration) =
            (parameters, optimizer, step, seed, task, configuration)
    }

    /// The safetensors contents: parameters, then first moments, then second moments, each in parameter order.
    public var safeTensors: SafeTensorsFile {
        // The optimizer covers exactly the parameters' flat range (checked in init): cut it tensor by tensor.
        func moments(_ flat: [Float], prefix: String) -> [SafeTensorsFile.Entry] {
            var offset = 0
            return zip(parameters.names, parameters.tensors).map { name, tensor in
                var moment = Tensor(shape: tensor.shape)
                moment.scalars = Array(flat[offset..<offset + tensor.count])
                offset += tensor.count
                return SafeTensorsFile.Entry(name: prefix + name, tensor: moment)
            }
        }
        let entries = zip(parameters.names, parameters.tensors).map { SafeTensorsFile.Entry(name: $0, tensor: $1) }
            + moments(optimizer.m, prefix: Self.firstMomentPrefix)
            + moments(optimizer.v, prefix: Self.secondMomentPrefix)
        let metadata = [
            "format": "pt", "checkpoint_version": Self.version, "step": String(step),
            "optimizer_step": String(optimizer.step), "seed": String(seed), "task": task, "config": configuration,
        ]
        return SafeTensorsFile(entries: entries, metadata: metadata)
    }

    /// Writes the checkpoint all or nothing: an error or a kill mid-write leaves any earlier file at `url` intact.
    public func write(to url: URL) throws { try safeTensors.write(to: url) }

    /// Reads a checkpoint written by `write(to:)`. Throws `invalidFile` naming the path and the missing or
    /// malformed field, or the parameter whose moments are missing or misshapen.
    public init(contentsOf url: URL) throws {
        try self.init(safeTensors: try SafeTensorsFile(contentsOf: url), name: url.path)
    }

    /// A checkpoint from safetensors contents; `name` appears in errors. Parameters keep the file's data order.
    public init(safeTensors file: SafeTensorsFile, name: String) throws {
        func fail(_ why: String) -> DistFlashError {
            DistFlashError(.invalidFile, "\(name): not a training checkpoint: \(why)")
        }
        func metadata(_ key: String) throws -> String {
            guard let value = file.metadata[key] else { throw fail("metadata has no \(key)") }
            return value
        }
        let version = try metadata("checkpoint_version")
        guard version == Self.version else { throw fail("checkpoint_version \(version) is not \(Self.version)") }
        let stepText = try metadata("step"), optimizerStepText = try metadata("optimizer_step")
        let seedText = try metadata("seed")
        guard let step = Int(stepText), step >= 0 else {
            throw fail("metadata step \(stepText) is not a non-negative integer")
        }
        guard let optimizerStep = Int(optimizerStepText), optimizerStep >= 0 else {
            throw fail("metadata optimizer_step \(optimizerStepText) is not a non-negative integer")
        }
        guard let seed = UInt64(seedText) else {
            throw fail("metadata seed \(seedText) is not an unsigned 64-bit integer")
        }

        let isMoment = { (entry: SafeTensorsFile.Entry) in entry.name.hasPrefix("optimizer.") }
        let parameters = Parameters(file.entries.filter { !isMoment($0) }.map { ($0.name, $0.tensor) })
        let moments = Dictionary(uniqueKeysWithValues: file.entries.filter(isMoment).map { ($0.name, $0.tensor) })
        func moment(_ prefix: String, of parameterName: String, shape: [Int]) throws -> [Float] {
            guard let moment = moments[prefix + parameterName] else {
                throw fail("\(prefix)\(parameterName) is missing")
            }
            guard moment.shape == shape else {
                throw fail("\(prefix)\(parameterName) has shape \(moment.shape), the parameter \(shape)")
            }
            return moment.scalars
        }
        var m: [Float] = [], v: [Float] = []
        for (parameterName, tensor) in zip(parameters.names, parameters.tensors) {
            m += try moment(Self.firstMomentPrefix, of: parameterName, shape: tensor.shape)
            v += try moment(Self.secondMomentPrefix, of: parameterName, shape: tensor.shape)
        }
        let expected = Set(parameters.names.flatMap { [Self.firstMomentPrefix + $0, Self.secondMomentPrefix + $0] })
        let strays = moments.keys.filter { !expected.contains($0) }.sorted()
        guard strays.isEmpty else { throw fail("\(strays.joined(separator: ", ")) belong to no parameter") }
        try self.init(parameters: parameters,
                      optimizer: AdamWState(step: optimizerStep, shard: 0..<parameters.scalarCount, m: m, v: v),
                      step: step, seed: seed, task: try metadata("task"), configuration: try metadata("config"))
    }
}

extension TrainingCheckpoint {
    /// Throws `invalidProblem` unless this checkpoint can continue `configuration` with `model` (named `name` in
    /// errors): the same trajectory settings, parameters of the model's shapes, a step within the run, and one
    /// optimizer update per step taken.
    public func check(resuming configuration: TrainingConfiguration, model: ModelConfig, name: String) throws {
        let saved = try TrainingConfiguration(trajectoryJSON: self.configuration, name: name)
        let differences = try configuration.trajectoryDifferences(from: saved)
        guard differences.isEmpty else {
            throw DistFlashError(.invalidProblem, "\(name): this run's settings differ from the "
                + "checkpoint's:\n  " + differences.joined(separator: "\n  ") + "\nA resumed run keeps every setting "
                + "its trajectory depends on: drop those flags (the checkpoint's values are used) or start a new run")
        }
        try model.validate(parameters, "\(name) parameters")
        guard step <= configuration.steps else {
            throw DistFlashError(.invalidProblem, "\(name): step \(step) is past the run's "
                + "\(configuration.steps) steps")
        }
        guard optimizer.step == step else {
            throw DistFlashError(.invalidFile, "\(name): optimizer step \(optimizer.step) but "
                + "training step \(step); every training step makes one update")
        }
    }
}
