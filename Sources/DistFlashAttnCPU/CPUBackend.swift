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

/// The executor runs plans on the CPU through these same primitives.
extension CPUBackend: AttentionBackend {}
