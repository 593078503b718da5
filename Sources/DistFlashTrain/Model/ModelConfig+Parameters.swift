import DistFlashAttn
import DistFlashAttnCPU
import Foundation

/// The nine tensors of one decoder layer, in Hugging Face `state_dict` order.
public enum LayerTensor: Int, CaseIterable, Sendable {
    case query, key, value, output, gate, up, down, inputNorm, postAttentionNorm

    var suffix: String {
        switch self {
        case .query: "self_attn.q_proj.weight"
        case .key: "self_attn.k_proj.weight"
        case .value: "self_attn.v_proj.weight"
        case .output: "self_attn.o_proj.weight"
        case .gate: "mlp.gate_proj.weight"
        case .up: "mlp.up_proj.weight"
        case .down: "mlp.down_proj.weight"
        case .inputNorm: "input_layernorm.weight"
        case .postAttentionNorm: "post_attention_layernorm.weight"
        }
    }
}

extension ModelConfig {
    /// Every parameter's Hugging Face name and shape, in the order `Parameters` holds them:
    /// ```
    /// model.embed_tokens.weight                          [V, E]
    /// model.layers.{i}.self_attn.q_proj.weight           [H·D, E]
    /// model.layers.{i}.self_attn.k_proj.weight           [H_kv·D, E]
    /// model.layers.{i}.self_attn.v_proj.weight           [H_kv·D, E]
    /// model.layers.{i}.self_attn.o_proj.weight           [E, H·D]
    /// model.layers.{i}.mlp.gate_proj.weight              [F, E]
    /// model.layers.{i}.mlp.up_proj.weight                [F, E]
    /// model.layers.{i}.mlp.down_proj.weight              [E, F]
    /// model.layers.{i}.input_layernorm.weight            [E]
    /// model.layers.{i}.post_attention_layernorm.weight   [E]
    /// model.norm.weight                                  [E]
    /// lm_head.weight                                     [V, E]
    /// ```
    public var parameterSpecs: [(name: String, shape: [Int])] {
        var specs: [(name: String, shape: [Int])] = [("model.embed_tokens.weight", [vocab, dim])]
        for layer in 0..<layers {
            for tensor in LayerTensor.allCases {
                specs.append(("model.layers.\(layer).\(tensor.suffix)", layerTensorShape(tensor)))
            }
        }
        specs.append(("model.norm.weight", [dim]))
        specs.append(("lm_head.weight", [vocab, dim]))
        return specs
    }

    func layerTensorShape(_ tensor: LayerTensor) -> [Int] {
        switch tensor {
        case .query: [heads * headDim, dim]
        case .key, .value: [kvHeads * headDim, dim]
        case .output: [dim, heads * headDim]
        case .gate, .up: [ffnDim, dim]
        case .down: [dim, ffnDim]
        case .inputNorm, .postAttentionNorm: [dim]
        }
    }

    /// Number of trainable scalars:
    /// `2·V·E + E + layers·(2·E·H·D + 2·E·H_kv·D + 3·E·F + 2·E)`.
    public var parameterCount: Int {
        2 * vocab * dim + dim + layers * (2 * dim * heads * headDim + 2 * dim * kvHeads * headDim + 3 * dim * ffnDim + 2 * dim)
    }

    // Slots: where each tensor sits in `Parameters` (the order of `parameterSpecs`).
    public var embeddingSlot: Int { 0 }
    public func slot(_ layer: Int, _ tensor: LayerTensor) -> Int { 1 + layer * LayerTensor.allCases.count + tensor.rawValue }
    public var finalNormSlot: Int { 1 + layers * LayerTensor.allCases.count }
    public var outputSlot: Int { finalNormSlot + 1 }

    /// Fresh parameters, the same for the same seed whatever `workers` is: every matrix N(0, 0.02²), every norm
    /// weight 1. Each run of 2¹⁶ consecutive values of a matrix comes from its own `SeededRandom` stream (tensor
    /// index, run index), so the runs fill in parallel: a 1B-parameter model in seconds rather than a minute.
    public func initialParameters(seed: UInt64, workers: Int = ProcessInfo.processInfo.activeProcessorCount)
        -> Parameters {
        let run = 1 << 16
        return Parameters(parameterSpecs.enumerated().map { index, spec in
            if spec.shape.count == 1 { return (spec.name, Tensor(shape: spec.shape, repeating: 1)) }
            var tensor = Tensor(shape: spec.shape)
            let count = tensor.scalars.count
            tensor.scalars.withUnsafeMutableBufferPointer { buffer in
                let values = SharedFloats(buffer.baseAddress!)  // each task writes its own run
                parallelFor(count: (count + run - 1) / run, workers: workers) { part, _ in
                    var random = SeededRandom(seed: seed, stream: UInt64(index) << 32 | UInt64(part))
                    for i in part * run..<min(count, (part + 1) * run) { values.base[i] = 0.02 * random.normal() }
                }
            }
            return (spec.name, tensor)
        })
    }

    /// Throws unless `parameters` holds exactly `parameterSpecs`: the same names in the same order, the same shapes.
    public func validate(_ parameters: Parameters, _ what: String = "parameters") throws {
        let specs = parameterSpecs
        guard parameters.count == specs.count else {
            throw DistFlashError(.shapeMismatch, "\(what) hold \(parameters.count) tensors, the model (\(self)) has "
                + "\(specs.count): build them with initialParameters(seed:) or load a checkpoint of this model")
        }
        for (i, spec) in specs.enumerated() {
            guard parameters.names[i] == spec.name else {
                throw DistFlashError(.shapeMismatch, "\(what) tensor \(i) is '\(parameters.names[i])', expected "
                    + "'\(spec.name)': tensors must follow the model's parameterSpecs order")
            }
            try parameters.tensors[i].requireShape(spec.shape, "\(what) '\(spec.name)'")
        }
    }
}
