import DistFlashAttn
import DistFlashAttnCPU

/// The model run sequence-parallel: every rank the same parameters, its shard of every row, the group's attention.
extension SequenceParallelGroup {
    /// Loss, correct predictions and gradient of `batch` `[B, S]` summed over the ranks (all-reduce), as one
    /// device would compute them for the whole batch:
    /// ```
    /// rank r:  loss_r, g_r = model(batch[:, positions_r]; θ)   normalised by N = labelled tokens of the batch
    /// loss = Σ_r loss_r     g = Σ_r g_r                        the same bits on every rank
    /// ```
    /// Each rank's dense math runs on `threadsPerRank` threads.
    public func reducedGradients(model: ModelConfig, parameters: Parameters, batch: TokenBatch,
                                 strategy: CheckpointStrategy, threadsPerRank: Int) throws -> ReducedGradients {
        let labelled = batch.labeledCount
        guard labelled > 0 else {
            throw DistFlashError(.invalidProblem, "the training batch has no labelled token: nothing to learn")
        }
        let results = try run { context -> (loss: Double, correct: Double, gradients: [Tensor]?) in
            let llama = LlamaModel(config: model, attention: context.attention, checkpoint: strategy,
                                   cpu: CPUBackend(workers: threadsPerRank))
            let (loss, cache) = try llama.forward(try context.shard(batch), positions: context.positions,
                                                  lossNormalizer: labelled, parameters: parameters)
            let correct = cache.correctPredictions
            let gradients = try context.allReduceSum(try llama.backward(cache).tensors)
            return (try context.allReduceSum(loss), try context.allReduceSum(Double(correct)),
                    context.rank == 0 ? gradients : nil)
        }
        var gradients = parameters
        gradients.tensors = results[0].gradients!
        return ReducedGradients(loss: results[0].loss, correct: Int(results[0].correct.rounded()),
                                labelled: labelled, gradients: gradients)
    }

    /// Mean loss and correct predictions over every labelled token of `batches` (each `[B, S]`), forward only.
    public func loss(model: ModelConfig, parameters: Parameters, batches: [TokenBatch], threadsPerRank: Int) throws
        -> (loss: Double, correct: Int, labelled: Int) {
        let labelled = batches.reduce(0) { $0 + $1.labeledCount }
        guard labelled > 0 else {
            throw DistFlashError(.invalidProblem, "the evaluation batches have no labelled token: nothing to evaluate")
        }
        let results = try run { context -> (loss: Double, correct: Double) in
            // Forward only: keep as little as the strategies allow.
            let llama = LlamaModel(config: model, attention: context.attention, checkpoint: .layer,
                                   cpu: CPUBackend(workers: threadsPerRank))
            var loss = 0.0, correct = 0
            for batch in batches {
                let (part, cache) = try llama.forward(try context.shard(batch), positions: context.positions,
                                                      lossNormalizer: labelled, parameters: parameters)
                loss += part
                correct += cache.correctPredictions
            }
            return (try context.allReduceSum(loss), try context.allReduceSum(Double(correct)))
        }
        return (results[0].loss, Int(results[0].correct.rounded()), labelled)
    }
}
