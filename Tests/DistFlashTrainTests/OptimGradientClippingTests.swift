import DistFlashAttn
import Testing
import DistFlashTrain

@Suite struct OptimGradientClippingTests {
    static func gradients() -> Parameters {
        Parameters([("a", Tensor(shape: [1], repeating: 3)), ("b", Tensor(shape: [2, 2], repeating: 2))])  // ‖g‖ = 5
    }

    @Test func clipsToTheMaximumAndReturnsThePreClipNorm() throws {
        var g = Self.gradients()
        #expect(try GradientClipping.clip(&g, maxNorm: 1) == 5)
        #expect(abs(GradientClipping.globalNorm(g) - 1) < 1e-6)
        #expect(abs(g["a"].scalars[0] - 0.6) < 1e-6 && abs(g["b"].scalars[0] - 0.4) < 1e-6)
    }

    @Test func leavesSmallOrNonFiniteGradientsAlone() throws {
        var g = Self.gradients()
        #expect(try GradientClipping.clip(&g, maxNorm: 10) == 5)
        #expect(g == Self.gradients())
        g["a"].scalars[0] = .nan
        let poisoned = g
        #expect(try GradientClipping.clip(&g, maxNorm: 1).isNaN)
        #expect(g.tensors[1] == poisoned.tensors[1])
        #expect(throws: DistFlashError.self) { try GradientClipping.clip(&g, maxNorm: 0) }
    }
}
