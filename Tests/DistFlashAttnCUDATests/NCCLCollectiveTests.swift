import DistFlashAttn
import DistFlashAttnCUDA
import Foundation
import Testing

/// Every GPU of this machine, when it has at least two.
let gpus: [CUDADevice] = {
    guard gpu != nil else { return [] }
    let devices = (0..<8).compactMap { try? CUDADevice(ordinal: $0) }
    return devices.count >= 2 ? devices : []
}()

/// Every test that runs NCCL over all GPUs, one at a time: communicators working at once on the same GPUs could
/// order their kernels differently on each GPU and wait on each other forever.
@Suite("Several GPUs", .serialized)
struct SeveralGPUs {}

extension SeveralGPUs {
    @Suite("NCCL collectives")
    struct NCCLCollectiveTests {
        /// Odd sizes; each rank's inputs are rank-distinct random numbers made on the host.
        static func inputs(rank: Int, count: Int, seed: UInt64) -> Tensor {
            var random = SeededRandom(seed: seed &+ UInt64(rank))
            return random.normalTensor(shape: [count])
        }

        @Test("all-reduce, all-gather and reduce-scatter equal their host sums and concatenation", .enabled(if: !gpus.isEmpty))
        func collectivesMatchHost() throws {
            let ranks = gpus.count
            let communicator = try NCCLCommunicator(devices: gpus, timeout: 30)
            let seed = UInt64.random(in: 0...UInt64.max)
            let part = 123  // the reduce-scatter's share: part · ranks ≤ count for up to 8 GPUs
            let count = max(1001, part * ranks)
            let hostSum = (0..<ranks).map { Self.inputs(rank: $0, count: count, seed: seed).scalars }
                .reduce(into: [Float](repeating: 0, count: count)) { total, x in for i in x.indices { total[i] += x[i] } }
            let results = try RankThreads.run(ranks: ranks, communicator: communicator, what: "collectives") { rank in
                let device = gpus[rank]
                let x = Self.inputs(rank: rank, count: count, seed: seed)
                let summed = try DeviceTensor.upload(x, to: device, as: .float32)
                try communicator.allReduceSum([summed], rank: rank)
                let mine = try DeviceTensor.upload(try Tensor(shape: [part], scalars: Array(x.scalars[0..<part])),
                                                   to: device, as: .float32)
                let whole = try DeviceTensor.upload(Tensor(shape: [part * ranks]), to: device, as: .float32)
                try communicator.allGather(mine, into: whole, rank: rank)
                let scattered = try DeviceTensor.upload(Tensor(shape: [part]), to: device, as: .float32)
                let source = try DeviceTensor.upload(try Tensor(shape: [part * ranks], scalars: Array(x.scalars[0..<(part * ranks)])),
                                                     to: device, as: .float32)
                try communicator.reduceScatterSum(source, into: scattered, rank: rank)
                return (try summed.download().scalars, try whole.download().scalars, try scattered.download().scalars)
            }
            for (rank, (summed, gathered, scattered)) in results.enumerated() {
                for i in 0..<count { #expect(abs(summed[i] - hostSum[i]) <= 1e-5 * (1 + abs(hostSum[i])), "rank \(rank) [\(i)]") }
                for r in 0..<ranks {
                    let expected = Array(Self.inputs(rank: r, count: count, seed: seed).scalars[0..<part])
                    #expect(Array(gathered[(r * part)..<((r + 1) * part)]) == expected, "rank \(rank) gathered part \(r)")
                }
                for i in 0..<part {
                    let total = hostSum[rank * part + i]
                    #expect(abs(scattered[i] - total) <= 1e-5 * (1 + abs(total)), "rank \(rank) scattered [\(i)]")
                }
            }
        }

        @Test("a rank that fails before an all-reduce makes every rank fail within the timeout, naming it",
              .enabled(if: !gpus.isEmpty))
        func missingRankFails() throws {
            let communicator = try NCCLCommunicator(devices: gpus, timeout: 3)
            let start = Date()
            #expect {
                _ = try RankThreads.run(ranks: gpus.count, communicator: communicator, what: "all-reduce") { rank in
                    if rank == 1 { throw DistFlashError(.runtime, "rank 1: failure injected before the all-reduce") }
                    let x = try DeviceTensor.upload(Tensor(shape: [7], repeating: 1), to: gpus[rank], as: .float32)
                    try communicator.allReduceSum([x], rank: rank)
                }
            } throws: { error in
                let message = (error as? DistFlashError)?.message ?? "\(error)"
                return message.contains("rank 1: failure injected")
            }
            #expect(Date().timeIntervalSince(start) < 3 + 10)
        }
    }
}
