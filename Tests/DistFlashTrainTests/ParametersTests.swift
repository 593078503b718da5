import DistFlashAttn
import Testing
@testable import DistFlashTrain

@Suite struct ParametersTests {
    @Test func zerosKeepNamesAndShapes() throws {
        let p = Parameters([("a", Tensor(shape: [2, 3], repeating: 1)), ("b", Tensor(shape: [5], repeating: 2))])
        let z = p.zeros()
        #expect(z.names == ["a", "b"])
        #expect(z["a"].shape == [2, 3] && z["b"].scalars == [Float](repeating: 0, count: 5))
        #expect(p.scalarCount == 11)
    }
}
