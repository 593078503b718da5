import ArgumentParser
import DistFlashAttn

extension AttentionProblem.DType: ExpressibleByArgument {}

/// The flags that describe an attention problem, shared by every subcommand.
struct ProblemOptions: ParsableArguments {
    @Option(help: "Batch size B.") var batch = 1
    @Option(help: "Sequence length S (default 1024).") var seq: Int?
    @Option(help: "Query heads H.") var heads = 8
    @Option(name: .customLong("kv-heads"), help: "Key/value heads H_kv (default H; GQA when smaller).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension D (1…256).") var headDim = 64
    @Option(help: "Mask: causal, full or window=W.") var mask = "causal"
    @Option(name: .customLong("doc-lens"), help: "Packed document lengths L1,L2,… summing to S.") var docLens: String?
    @Option(help: "Softmax scale (default 1/√D).") var scale: Float?
    @Option(help: "Input precision: fp32, bf16 or fp16 (compute is fp32; --backend cuda takes bf16 (default) or fp16).")
    var dtype: AttentionProblem.DType = .fp32

    /// The problem these flags describe; `shapes` (from input files) replaces B, S, H, H_kv, D when given.
    /// `defaultSequence` is S when `--seq` is not given.
    func problem(shapes: (query: [Int], keyValue: [Int])? = nil, defaultSequence: Int = 1024) throws -> AttentionProblem {
        let kind = try AttentionMask.parseKind(mask)
        let documents = try docLens.map(Self.parseLengths)
        var (b, s, h, hkv, d) = (batch, seq ?? defaultSequence, heads, kvHeads, headDim)
        if let (q, kv) = shapes { (b, s, h, hkv, d) = (q[0], q[1], q[2], kv[2], q[3]) }
        return try AttentionProblem(batch: b, sequence: s, heads: h, kvHeads: hkv, headDim: d, scale: scale,
                                    mask: AttentionMask(kind, documentLengths: documents), dtype: dtype)
    }

    static func parseLengths(_ text: String) throws -> [Int] {
        try text.split(separator: ",", omittingEmptySubsequences: false).map { token in
            guard let n = Int(token.trimmingCharacters(in: .whitespaces)) else {
                throw DistFlashError(.invalidProblem, "doc-lens '\(text)': '\(token)' is not an integer length")
            }
            return n
        }
    }
}
