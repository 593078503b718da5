/// What one training step did. Loss and accuracy are over the whole batch (every rank's shard), measured by the
/// forward pass *before* the update.
public struct StepReport: Sendable, Equatable {
    /// Steps completed, this one included (1 after the first update).
    public var step: Int
    /// Mean cross-entropy over the batch's labelled tokens.
    public var loss: Double
    /// Fraction of labelled tokens whose top logit is their label.
    public var accuracy: Double
    /// Labelled tokens in the batch (N, the loss normaliser).
    public var labelled: Int
    /// ‖g‖₂ before clipping.
    public var gradientNorm: Float
    /// The learning rate of this update.
    public var learningRate: Float
    /// The rows' length: S, or the sequence warm-up's.
    public var sequence: Int
    /// Tokens in the batch, B·S (or the warm-up's rows × length).
    public var tokens: Int
    /// Wall time of the step: forward, backward, all-reduce and update.
    public var seconds: Double
    /// Device time by phase where the trainer measures it (GPUs: "attention", "gemm", "optimizer"), in seconds.
    public var phaseSeconds: [String: Double]

    public var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }

    public init(step: Int, loss: Double, accuracy: Double, labelled: Int, gradientNorm: Float, learningRate: Float,
                sequence: Int, tokens: Int, seconds: Double, phaseSeconds: [String: Double] = [:]) {
        (self.step, self.loss, self.accuracy, self.labelled, self.gradientNorm, self.learningRate) =
            (step, loss, accuracy, labelled, gradientNorm, learningRate)
        (self.sequence, self.tokens, self.seconds, self.phaseSeconds) = (sequence, tokens, seconds, phaseSeconds)
    }
}

/// Loss and accuracy on held-out batches (forward only, parameters unchanged).
public struct Evaluation: Sendable, Equatable {
    /// Steps completed when it was measured.
    public var step: Int
    /// Mean cross-entropy over every labelled held-out token.
    public var loss: Double
    /// Fraction of labelled held-out tokens predicted right.
    public var accuracy: Double
    /// Labelled held-out tokens.
    public var labelled: Int
    public var seconds: Double

    public init(step: Int, loss: Double, accuracy: Double, labelled: Int, seconds: Double) {
        (self.step, self.loss, self.accuracy, self.labelled, self.seconds) = (step, loss, accuracy, labelled, seconds)
    }
}

/// The batch's loss, correct-prediction count and gradient summed over the ranks, before clipping and update.
public struct ReducedGradients: Sendable {
    public var loss: Double
    public var correct: Int
    public var labelled: Int
    /// ∂loss/∂θ for the whole batch (the all-reduced sum of every rank's shard gradient).
    public var gradients: Parameters
}
