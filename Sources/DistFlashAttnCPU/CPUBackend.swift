import DistFlashAttn
import _CPUKernels

#if canImport(Glibc)
import Glibc
#endif

/// The CPU backend: FlashAttention block primitives on host tensors, tiled, multithreaded over (batch, head,
/// tile), with AVX-512 / AVX2 micro-kernels picked at run time.
///
/// Single-device attention is these same primitives applied to one block holding the whole sequence.
public struct CPUBackend: Sendable {
    /// Vector instruction sets of the micro-kernels, widest last.
    public enum InstructionSet: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case generic = 0, avx2 = 1, avx512 = 2
        /// The widest this CPU supports (lowered by `DISTFLASH_CPU_ISA=generic|avx2`).
        public static var best: InstructionSet { InstructionSet(rawValue: dfa_best_isa())! }
        public var description: String { String(cString: dfa_isa_name(rawValue)) }
    }

    /// Threads the kernels use.
    public var workers: Int
    /// Micro-kernel path; at most `InstructionSet.best`.
    public var instructionSet: InstructionSet
    /// Query rows per tile (Br) and key rows per tile (Bc): a 64×128 score tile fills L1 (32 KiB); measured
    /// against 48–128 × 64–256 on a 2-core Zen 4, this was among the fastest for forward and backward.
    let queryTile = 64
    let keyTile = 128

    public init(workers: Int? = nil, instructionSet: InstructionSet? = nil) {
        self.workers = max(1, workers ?? CPUBackend.defaultWorkers)
        let wanted = instructionSet ?? .best
        self.instructionSet = wanted.rawValue <= InstructionSet.best.rawValue ? wanted : .best
    }

    var isa: Int32 { instructionSet.rawValue }

    /// `DISTFLASH_THREADS` if set, else every core.
    public static var defaultWorkers: Int {
        if let text = getenv("DISTFLASH_THREADS").map({ String(cString: $0) }), let n = Int(text), n >= 1 { return n }
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// Sizes of one block-pair call, checked against each other.
struct BlockGeometry {
    let batch, queries, keys, heads, kvHeads, dim: Int
    var group: Int { heads / kvHeads }

    init(query: Tensor, key: Tensor, value: Tensor, queryPositions: [Int], keyPositions: [Int]) throws {
        guard query.shape.count == 4, key.shape.count == 4 else {
            throw DistFlashError(.shapeMismatch, "Q \(query.shape) and K \(key.shape) must be [B, S, H, D]")
        }
        (batch, queries, heads, dim) = (query.shape[0], query.shape[1], query.shape[2], query.shape[3])
        (keys, kvHeads) = (key.shape[1], key.shape[2])
        try key.requireShape([batch, keys, kvHeads, dim], "K")
        try value.requireShape(key.shape, "V")
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw DistFlashError(.shapeMismatch, "Q has \(heads) heads, K/V \(kvHeads): H must be a multiple of H_kv")
        }
        guard queryPositions.count == queries, keyPositions.count == keys else {
            throw DistFlashError(.shapeMismatch, "\(queryPositions.count) query / \(keyPositions.count) key positions "
                + "for \(queries) query / \(keys) key rows")
        }
    }
}

/// The executor runs plans on the CPU through these same primitives.
extension CPUBackend: AttentionBackend {}
