import DistFlashAttn
import DistFlashAttnCUDA
import Testing

/// Tensors parked in pinned host memory by the copy stream come back bit for bit, whatever the compute stream did
/// with the memory they left.
@Suite("Host offload")
struct HostOffloadTests {
    @Test("parked fp32 and bf16 tensors come back exact, fetched ahead or not, their old memory reused meanwhile",
          .enabled(if: gpu != nil))
    func roundTrip() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let offload = try HostOffload(device: gpu!)
        let kernels = TrainingKernels(device: gpu!)
        for round in 0..<2 {  // the second round reuses the first's pinned buffers
            // Three groups, as a forward parks three layers' checkpoints, each right after it was written.
            var groups: [(want: [Tensor], parked: [HostOffload.Parked])] = []
            for group in 0..<3 {
                let want = [random.normalTensor(shape: [5 + group, 37]),
                            random.normalTensor(shape: [3, 11 + 2 * group]).roundedToBFloat16()]
                let tensors = [try DeviceTensor.upload(want[0], to: gpu!, as: .float32),
                               try DeviceTensor.upload(want[1], to: gpu!, as: .bfloat16)]
                groups.append((want, try offload.park(tensors)))
            }
            try offload.releaseParked()
            // The pool hands the freed memory out again: overwrite it before anything comes back.
            let scribbles = try groups.flatMap(\.want).map { want in
                let scribble = try DeviceTensor.upload(Tensor(shape: [want.count], scalars: .init(repeating: 0, count: want.count)),
                                                       to: gpu!, as: .float32)
                try kernels.fill(scribble, with: .nan)
                return scribble
            }
            // Back last group first, the one before it fetched while this one loads (as the backward does).
            for index in groups.indices.reversed() {
                if index > 0 { try groups[index - 1].parked.forEach { try $0.fetch() } }
                let back = try groups[index].parked.map { try $0.load().download() }
                #expect(back.map(\.shape) == groups[index].want.map(\.shape), "round \(round), group \(index)")
                #expect(back.map(\.scalars) == groups[index].want.map(\.scalars), "round \(round), group \(index)")
            }
            _ = scribbles
        }
        // Fetched but never loaded: its device memory and pinned buffer go back without harm.
        let parked = try offload.park([try DeviceTensor.upload(random.normalTensor(shape: [9]), to: gpu!, as: .float32)])
        try parked[0].fetch()
    }
}
