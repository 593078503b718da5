import DistFlashAttn
import Foundation
import Testing
import DistFlashTrain

@Suite struct FilesTrainingCheckpointTests {
    static let configuration = #"{"model":"tiny","lr":0.001}"#

    /// A stand-in for training: the loss of step t is ½‖θ − c_t‖² with c_t drawn from the recall task's batch of
    /// step t, so the trajectory depends on the parameters, the optimizer's moments and the data's (seed, step).
    struct Run {
        let data = try! RecallTask(sequenceLength: 32, pairs: 3, queries: 2, minimumDistance: 8, seed: 21)
        let schedule = try! LearningRateSchedule(peak: 0.05, warmupSteps: 3, totalSteps: 20)

        func step(_ t: Int, _ parameters: inout Parameters, _ optimizer: inout AdamW) throws -> Float {
            let batch = data.batch(step: t, size: 1)
            var gradients = parameters.zeros(), loss: Float = 0
            var cursor = 0
            for (i, tensor) in parameters.tensors.enumerated() {
                for j in tensor.scalars.indices {
                    let target = Float(batch.tokens[cursor % batch.tokens.count]) / Float(data.vocabularySize)
                    cursor += 7
                    let difference = tensor.scalars[j] - target
                    loss += difference * difference / 2
                    gradients.tensors[i].scalars[j] = difference
                }
            }
            try GradientClipping.clip(&gradients, maxNorm: 1)
            try optimizer.update(&parameters, gradients: gradients, learningRate: schedule.rate(at: t))
            return loss
        }
    }

    static func initialParameters() -> Parameters {
        var random = SeededRandom(seed: 8)
        return Parameters([("model.embed_tokens.weight", random.normalTensor(shape: [4, 3])),
                           ("model.norm.weight", random.normalTensor(shape: [3]))])
    }

    @Test func resumingFromACheckpointReproducesTheLossTrajectoryExactly() throws {
        let run = Run()
        var straight = Self.initialParameters()
        var optimizer = try AdamW(parameters: straight)
        let expected = try (0..<12).map { try run.step($0, &straight, &optimizer) }

        try withScratchFolder { folder in
            var parameters = Self.initialParameters()
            var first = try AdamW(parameters: parameters)
            var losses = try (0..<5).map { try run.step($0, &parameters, &first) }
            let url = folder.appendingPathComponent("step5.safetensors")
            try TrainingCheckpoint(parameters: parameters, optimizer: first.state, step: 5, seed: 21, task: "recall",
                                   configuration: Self.configuration).write(to: url)

            let checkpoint = try TrainingCheckpoint(contentsOf: url)
            #expect(checkpoint.step == 5 && checkpoint.seed == 21 && checkpoint.task == "recall")
            #expect(checkpoint.configuration == Self.configuration)
            var resumed = checkpoint.parameters
            var second = try AdamW(state: checkpoint.optimizer)
            losses += try (checkpoint.step..<12).map { try run.step($0, &resumed, &second) }
            #expect(losses == expected)
            #expect(resumed == straight)
            #expect(second.state == optimizer.state)
        }
    }

    @Test func fileHoldsHuggingFaceNamesMomentsAndMetadata() throws {
        let parameters = Self.initialParameters()
        var state = AdamWState(shard: 0..<parameters.scalarCount)
        state.step = 9
        state.m = (0..<15).map(Float.init)
        state.v = (0..<15).map { Float($0) / 10 }
        let checkpoint = try TrainingCheckpoint(parameters: parameters, optimizer: state, step: 9,
                                                seed: .max, task: "text", configuration: "{}")
        let file = checkpoint.safeTensors
        #expect(file.entries.map(\.name) == [
            "model.embed_tokens.weight", "model.norm.weight",
            "optimizer.m.model.embed_tokens.weight", "optimizer.m.model.norm.weight",
            "optimizer.v.model.embed_tokens.weight", "optimizer.v.model.norm.weight",
        ])
        #expect(file["optimizer.m.model.norm.weight"]?.tensor.scalars == [12, 13, 14])
        #expect(file.metadata["format"] == "pt" && file.metadata["seed"] == "18446744073709551615")
        let decoded = try SafeTensorsFile(bytes: file.encoded(), name: "c")
        #expect(try TrainingCheckpoint(safeTensors: decoded, name: "c") == checkpoint)
    }

    @Test func rejectsShardedStateAndIncompleteFiles() throws {
        let parameters = Self.initialParameters()
        #expect(throws: DistFlashError.self) {
            try TrainingCheckpoint(parameters: parameters, optimizer: AdamWState(shard: 0..<7), step: 0, seed: 0,
                                   task: "recall", configuration: "{}")
        }
        let good = try TrainingCheckpoint(parameters: parameters, optimizer: AdamWState(shard: 0..<15), step: 0,
                                          seed: 0, task: "recall", configuration: "{}").safeTensors
        func failure(_ file: SafeTensorsFile) -> String {
            do { _ = try TrainingCheckpoint(safeTensors: file, name: "ckpt"); return "" } catch { return "\(error)" }
        }
        var missingMoment = good
        missingMoment.entries.removeAll { $0.name == "optimizer.v.model.norm.weight" }
        #expect(failure(missingMoment).contains("optimizer.v.model.norm.weight is missing"))
        var stray = good
        stray.entries.append(.init(name: "optimizer.m.lm_head.weight", tensor: Tensor(shape: [1])))
        #expect(failure(stray).contains("optimizer.m.lm_head.weight belong to no parameter"))
        var misshapen = good
        misshapen.entries[2].tensor = Tensor(shape: [12])
        #expect(failure(misshapen).contains("has shape [12], the parameter [4, 3]"))
        var noStep = good
        noStep.metadata["step"] = nil
        #expect(failure(noStep).contains("metadata has no step"))
        var badSeed = good
        badSeed.metadata["seed"] = "-1"
        #expect(failure(badSeed).contains("seed -1"))
    }
}
