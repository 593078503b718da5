import DistFlashAttn
import DistFlashAttnCUDA
import DistFlashTrain
import DistFlashTrainCUDA
import Testing

/// The GEMMs' bf16 copies of the master weights, made on demand or resident: each is its master rounded to nearest
/// even; on demand the most recent ones are kept, and none outlives a change of its master that `mastersChanged`
/// announces; resident, that call rounds them again.
@Suite("GPU weights' bf16 copies")
struct DeviceWeightsTests {
    @Test("copies equal their masters rounded, follow the masters after mastersChanged; vectors have none",
          .enabled(if: gpu != nil))
    func copies() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        // Ten matrices of odd shapes (more than are kept) and a norm-like vector, which no GEMM reads.
        var entries = (0..<10).map { (name: "m\($0)", tensor: random.normalTensor(shape: [3 + 2 * $0, 7])) }
        entries.append((name: "norm", tensor: random.normalTensor(shape: [7])))
        let parameters = Parameters(entries)
        let weights = try DeviceWeights(parameters, on: gpu!)
        for round in 0..<2 {  // the second pass re-makes the copies the first pass's later ones evicted
            for slot in 0..<10 {
                #expect(try weights.bf16(slot).download().scalars == parameters.tensors[slot].roundedToBFloat16().scalars,
                        "pass \(round), slot \(slot)")
            }
        }
        let kept = try weights.bf16(9)
        #expect(try weights.bf16(9) === kept, "a recent copy is reused")

        try TrainingKernels(device: gpu!).fill(weights.master[9], with: 0.3)
        try weights.mastersChanged()
        #expect(try weights.bf16(9).download().scalars == [Float](repeating: 0.30078125, count: parameters.tensors[9].count),
                "0.3 rounded to bf16, after the master changed")
        #expect(try kept.download().scalars == parameters.tensors[9].roundedToBFloat16().scalars,
                "a copy a caller still holds keeps its values")
        #expect(throws: DistFlashError.self) { try weights.bf16(10) }
    }

    @Test("a stacked copy is its masters' rows one after another, rounded; stacks need matrices of one width",
          .enabled(if: gpu != nil))
    func stacked() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let shapes = [[5, 9], [3, 9], [3, 9], [4, 7]]
        let parameters = Parameters(shapes.enumerated().map {
            (name: "m\($0.offset)", tensor: random.normalTensor(shape: $0.element))
        })
        let weights = try DeviceWeights(parameters, on: gpu!)
        let stacked = try weights.bf16(stacking: 0..<3)
        #expect(stacked.shape == [11, 9])
        #expect(try stacked.download().scalars == parameters.tensors[0..<3].flatMap { $0.roundedToBFloat16().scalars })
        #expect(try weights.bf16(stacking: 0..<3) === stacked, "a recent stack is reused")
        #expect(throws: DistFlashError.self) { try weights.bf16(stacking: 2..<4) }  // 9 and 7 columns
        // Tensors that do not follow one another in one buffer do not join.
        let apart = try [0, 1].map { try DeviceTensor.upload(parameters.tensors[$0], to: gpu!, as: .float32) }
        #expect(throws: DistFlashError.self) { try DeviceTensor.joined(apart, as: [8, 9]) }
        #expect(throws: DistFlashError.self) {  // out of order
            try DeviceTensor.joined([weights.master[1], weights.master[0]], as: [8, 9])
        }
    }

    @Test("resident copies: the whole model rounded once, stacks as views, rounded again after mastersChanged",
          .enabled(if: gpu != nil))
    func resident() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let shapes = [[5, 9], [3, 9], [3, 9], [7], [4, 7]]
        let parameters = Parameters(shapes.enumerated().map {
            (name: "m\($0.offset)", tensor: random.normalTensor(shape: $0.element))
        })
        let weights = try DeviceWeights(parameters, resident: true, on: gpu!)
        #expect(try weights.resident!.download().scalars == parameters.tensors.flatMap { $0.roundedToBFloat16().scalars })
        let stacked = try weights.bf16(stacking: 0..<3)
        #expect(stacked.shape == [11, 9])
        #expect(try stacked.download().scalars == parameters.tensors[0..<3].flatMap { $0.roundedToBFloat16().scalars })
        #expect(try weights.bf16(4).download().scalars == parameters.tensors[4].roundedToBFloat16().scalars)
        #expect(throws: DistFlashError.self) { try weights.bf16(3) }  // a vector: no GEMM reads it
        #expect(throws: DistFlashError.self) { try weights.bf16(stacking: 2..<5) }

        try TrainingKernels(device: gpu!).fill(weights.master[1], with: 0.3)
        #expect(try weights.bf16(1).download().scalars == parameters.tensors[1].roundedToBFloat16().scalars,
                "unchanged until announced")
        try weights.mastersChanged()
        #expect(try stacked.download().scalars == parameters.tensors[0].roundedToBFloat16().scalars
                    + [Float](repeating: 0.30078125, count: 27) + parameters.tensors[2].roundedToBFloat16().scalars,
                "a held view shows the copy rounded again")
    }
}
