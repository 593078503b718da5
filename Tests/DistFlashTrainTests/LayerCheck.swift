import DistFlashAttn
import DistFlashAttnReference
import Testing

/// One layer under test: its inputs, the library's forward and backward, and the plain reference forward.
protocol LayerCase {
    var name: String { get }
    var inputs: [(name: String, tensor: Tensor)] { get }
    func forward(_ inputs: [Tensor]) throws -> Tensor
    /// Gradient of Σ y∘dy with respect to each input.
    func backward(_ inputs: [Tensor], outputGrad: Tensor) throws -> [Tensor]
    func reference<R: ReferenceScalar>(_ inputs: [[R]]) -> [R]
}

/// Checks a layer under the tolerance rule (ours vs float64 against naive float32 vs float64, plus atol):
/// - the forward output against the float64 reference forward;
/// - each input's gradient of L = Σ y∘c (c random) against central finite differences of the float64 reference,
///   (L(x + h·e_j) − L(x − h·e_j)) / 2h with h = 1e-4: truncation ~h²·L‴ ≈ 1e-8 and rounding ~1e-16·|L|/h ≈ 1e-11,
///   far below the float32 errors being judged (the naive float32 gradient, taken on a float32 tape, is the
///   baseline). A wrong term in a backward gives errors of the size of the gradient itself, well above the bound.
func checkLayer(_ layer: some LayerCase, seed: UInt64 = UInt64.random(in: 0...UInt64.max),
                sourceLocation: SourceLocation = #_sourceLocation) throws {
    let inputs = layer.inputs.map(\.tensor)
    let doubles = inputs.map { $0.scalars.map(Double.init) }
    let output = try layer.forward(inputs)
    let reference = layer.reference(doubles)
    var random = SeededRandom(seed: seed)
    let cotangent = (0..<reference.count).map { _ in Double(random.normal()) }

    let tape = Tape<Float>()
    let traced = inputs.map { $0.scalars.map { tape.variable($0) } }
    let naiveOutput = layer.reference(traced)
    let naiveLoss = Traced.dot(naiveOutput[...], cotangent.map { Traced<Float>($0) }[...])
    let adjoint = tape.gradient(of: naiveLoss)

    var checks = [ToleranceCheck("\(layer.name) y", ours: output.scalars, baseline: naiveOutput.map(\.value),
                                 reference: reference)]
    let cotangentTensor = try Tensor(shape: output.shape, scalars: cotangent.map(Float.init))
    let grads = try layer.backward(inputs, outputGrad: cotangentTensor)
    for (i, input) in layer.inputs.enumerated() {
        var perturbed = doubles
        let finiteDifferences = (0..<input.tensor.count).map { j -> Double in
            let h = 1e-4
            perturbed[i][j] = doubles[i][j] + h
            let up = Double.dot(layer.reference(perturbed)[...], cotangent[...])
            perturbed[i][j] = doubles[i][j] - h
            let down = Double.dot(layer.reference(perturbed)[...], cotangent[...])
            perturbed[i][j] = doubles[i][j]
            return (up - down) / (2 * h)
        }
        try grads[i].requireShape(input.tensor.shape, "d\(input.name)")
        checks.append(ToleranceCheck("\(layer.name) d\(input.name)", ours: grads[i].scalars,
                                     baseline: traced[i].map { adjoint[Int($0.index)] }, reference: finiteDifferences))
    }
    for check in checks {
        print("seed \(seed): \(check.summary)")
        #expect(check.passed, "seed \(seed): \(check.summary)", sourceLocation: sourceLocation)
    }
}
