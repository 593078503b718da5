import DistFlashAttnReference

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The scalar arithmetic the plain reference implementations are written in: `Double` (values only, for finite
/// differences) or `Traced<T>` (values and reverse-mode gradients, in float64 for the reference or float32 for
/// the "naive in the same precision" baseline of the tolerance rule).
protocol ReferenceScalar {
    /// A constant (no gradient flows into it).
    init(_ constant: Double)
    var doubleValue: Double { get }
    static func + (a: Self, b: Self) -> Self
    static func - (a: Self, b: Self) -> Self
    static func * (a: Self, b: Self) -> Self
    static func / (a: Self, b: Self) -> Self
    func exp() -> Self
    func log() -> Self
    func squareRoot() -> Self
    /// Σ_i a_i·b_i
    static func dot(_ a: ArraySlice<Self>, _ b: ArraySlice<Self>) -> Self
}

extension Double: ReferenceScalar {
    var doubleValue: Double { self }
    func exp() -> Double { Glibc.exp(self) }
    func log() -> Double { Glibc.log(self) }
    static func dot(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
        zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
    }
}

/// A tape of scalar operations: node i has a value and the partial derivatives of its value with respect to
/// its parents. The gradient of one node with respect to every node is one sweep backwards over the tape.
final class Tape<T: NaiveScalar> {
    private(set) var values: [T] = []
    private var parentStart: [Int] = [0]
    private var parents: [Int32] = []
    private var partials: [T] = []

    /// An input with a gradient.
    func variable(_ value: T) -> Traced<T> { record(value, []) }

    func record(_ value: T, _ edges: [(Int32, T)]) -> Traced<T> {
        for (parent, partial) in edges where parent >= 0 {
            parents.append(parent)
            partials.append(partial)
        }
        values.append(value)
        parentStart.append(parents.count)
        return Traced(index: Int32(values.count - 1), value: value, tape: self)
    }

    /// d output / d node for every node (accumulated in T).
    func gradient(of output: Traced<T>) -> [T] {
        var adjoint = [T](repeating: 0, count: values.count)
        adjoint[Int(output.index)] = 1
        for node in stride(from: Int(output.index), through: 0, by: -1) where adjoint[node] != 0 {
            for edge in parentStart[node]..<parentStart[node + 1] {
                adjoint[Int(parents[edge])] += adjoint[node] * partials[edge]
            }
        }
        return adjoint
    }
}

/// A scalar recorded on a tape (index −1 and no tape: a constant).
struct Traced<T: NaiveScalar>: ReferenceScalar {
    let index: Int32
    let value: T
    let tape: Tape<T>?

    init(index: Int32, value: T, tape: Tape<T>?) {
        (self.index, self.value, self.tape) = (index, value, tape)
    }

    init(_ constant: Double) { self.init(index: -1, value: T(constant), tape: nil) }

    var doubleValue: Double { Double(value) }

    private static func node(_ value: T, _ edges: [(Traced, T)]) -> Traced {
        guard let tape = edges.lazy.compactMap(\.0.tape).first else { return Traced(index: -1, value: value, tape: nil) }
        return tape.record(value, edges.map { ($0.0.index, $0.1) })
    }

    static func + (a: Traced, b: Traced) -> Traced { node(a.value + b.value, [(a, 1), (b, 1)]) }
    static func - (a: Traced, b: Traced) -> Traced { node(a.value - b.value, [(a, 1), (b, -1)]) }
    static func * (a: Traced, b: Traced) -> Traced { node(a.value * b.value, [(a, b.value), (b, a.value)]) }
    static func / (a: Traced, b: Traced) -> Traced {
        node(a.value / b.value, [(a, 1 / b.value), (b, -a.value / (b.value * b.value))])
    }
    func exp() -> Traced {
        let e = T.exp(value)
        return Traced.node(e, [(self, e)])
    }
    func log() -> Traced { Traced.node(T.log(value), [(self, 1 / value)]) }
    func squareRoot() -> Traced {
        let root = value.squareRoot()
        return Traced.node(root, [(self, 1 / (2 * root))])
    }
    static func dot(_ a: ArraySlice<Traced>, _ b: ArraySlice<Traced>) -> Traced {
        var sum: T = 0
        var edges: [(Traced, T)] = []
        edges.reserveCapacity(2 * a.count)
        for (x, y) in zip(a, b) {
            sum += x.value * y.value
            edges.append((x, y.value))
            edges.append((y, x.value))
        }
        return node(sum, edges)
    }
}
