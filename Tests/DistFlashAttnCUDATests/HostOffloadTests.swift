import DistFlashAttn
@testable import DistFlashAttnCUDA
import Testing

/// Tensors parked in pinned host memory by the copy stream come back bit for bit, whatever the compute stream did
/// with the memory they left. The copy stream is held back before every copy, so a copy that the compute stream
/// does not wait for would read memory already scribbled over, or be read before it lands.
@Suite("Host offload")
struct HostOffloadTests {
    static let hold = 50_000  // µs the copy stream waits before each group's copies

    @Test("parked fp32 and bf16 tensors come back exact, fetched ahead or not, their old memory reused meanwhile",
          .enabled(if: gpu != nil))
    func roundTrip() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let offload = try HostOffload(device: gpu!)
        for round in 0..<2 {  // the second round reuses the first's pinned buffers
            // Three groups, as a forward parks three layers' checkpoints, each right after it was written.
            var groups: [(want: [Tensor], parked: [HostOffload.Parked])] = []
            var scribbles: [DeviceTensor] = []
            for _ in 0..<3 {  // one size for all groups, so the pool hands a freed group's memory to the scribbles
                let want = [random.normalTensor(shape: [5 + round, 37]),
                            random.normalTensor(shape: [3, 11 + 2 * round]).roundedToBFloat16()]
                let tensors = [try DeviceTensor.upload(want[0], to: gpu!, as: .float32),
                               try DeviceTensor.upload(want[1], to: gpu!, as: .bfloat16)]
                try offload.holdCopies(microseconds: Self.hold)
                groups.append((want, try offload.park(tensors)))
                scribbles += try Self.scribble(over: tensors)  // the previous group's memory was just freed
            }
            try offload.releaseParked()
            scribbles += try Self.scribble(over: groups.last!.want.enumerated().map {
                try DeviceTensor(gpu!, shape: $1.shape, precision: $0 == 0 ? .float32 : .bfloat16)
            })
            // Back last group first, the one before it fetched while this one loads (as the backward does).
            for index in groups.indices.reversed() {
                try offload.holdCopies(microseconds: Self.hold)
                if index > 0 { try groups[index - 1].parked.forEach { try $0.fetch() } }
                let back = try groups[index].parked.map { try $0.load().download() }
                #expect(back.map(\.shape) == groups[index].want.map(\.shape), "round \(round), group \(index)")
                #expect(back.map(\.scalars) == groups[index].want.map(\.scalars), "round \(round), group \(index)")
            }
            _ = scribbles
        }
        // Fetched but never loaded: its device memory waits for the copy, and its pinned buffer serves the next one.
        let want = random.normalTensor(shape: [9, 5])
        var parked = try offload.park([try DeviceTensor.upload(random.normalTensor(shape: [9, 5]), to: gpu!, as: .float32)])
        try offload.holdCopies(microseconds: Self.hold)
        try parked[0].fetch()
        parked = try offload.park([try DeviceTensor.upload(want, to: gpu!, as: .float32)])
        try offload.releaseParked()
        #expect(try parked[0].load().download() == want)
    }

    /// New tensors of the same sizes filled with NaN (the pool hands out memory just freed).
    static func scribble(over tensors: [DeviceTensor]) throws -> [DeviceTensor] {
        try tensors.map { tensor in
            let scribble = try DeviceTensor(gpu!, shape: tensor.shape, precision: tensor.precision)
            if tensor.precision == .float32 {
                try scribble.buffer.fill32(0x7fc0_0000, count: tensor.count)
            } else {
                try scribble.buffer.fill16(0x7fc0, count: tensor.count)
            }
            return scribble
        }
    }
}
