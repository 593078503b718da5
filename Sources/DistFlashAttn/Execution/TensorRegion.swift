extension Tensor {
    /// The sub-block at `ranges` (one range per axis), e.g. `[0..<B, rows, heads, 0..<D]` of a `[B, S, H, D]`
    /// tensor, as a new dense tensor.
    public func block(_ ranges: [Range<Int>]) -> Tensor {
        var out = Tensor(shape: ranges.map(\.count))
        out.scalars.withUnsafeMutableBufferPointer { dst in
            scalars.withUnsafeBufferPointer { src in
                var n = 0
                Self.visit(shape: shape, ranges: ranges) { offset, run in
                    for i in 0..<run { dst[n + i] = src[offset + i] }
                    n += run
                }
            }
        }
        return out
    }

    /// Writes `values` over the sub-block at `ranges`.
    public mutating func setBlock(_ ranges: [Range<Int>], to values: Tensor) {
        update(ranges, values) { $0 = $1 }
    }

    /// Adds `values` into the sub-block at `ranges`.
    public mutating func addBlock(_ ranges: [Range<Int>], _ values: Tensor) {
        update(ranges, values) { $0 += $1 }
    }

    private mutating func update(_ ranges: [Range<Int>], _ values: Tensor, _ combine: (inout Float, Float) -> Void) {
        precondition(values.shape == ranges.map(\.count), "block \(ranges) does not fit \(values.shape)")
        let shape = self.shape
        values.scalars.withUnsafeBufferPointer { src in
            scalars.withUnsafeMutableBufferPointer { dst in
                var n = 0
                Self.visit(shape: shape, ranges: ranges) { offset, run in
                    for i in 0..<run { combine(&dst[offset + i], src[n + i]) }
                    n += run
                }
            }
        }
    }

    /// Calls `body(offset, count)` for each contiguous run of the block, in row-major order.
    private static func visit(shape: [Int], ranges: [Range<Int>], _ body: (Int, Int) -> Void) {
        precondition(shape.count == ranges.count && zip(shape, ranges).allSatisfy { $1.lowerBound >= 0 && $1.upperBound <= $0 },
                     "block \(ranges) is outside shape \(shape)")
        if ranges.contains(where: \.isEmpty) { return }
        let last = shape.count - 1
        var strides = [Int](repeating: 1, count: shape.count)
        for axis in stride(from: last - 1, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
        var index = ranges.map(\.lowerBound)
        while true {
            let offset = zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 }
            body(offset, ranges[last].count)
            var axis = last - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < ranges[axis].upperBound { break }
                index[axis] = ranges[axis].lowerBound
                axis -= 1
            }
            if axis < 0 { return }
        }
    }
}
