import DistFlashAttn

extension Tensor {
    /// Rows `range` of the tensor viewed as a matrix (rows over the leading axes, columns over the last) as a
    /// `[rows, columns]` tensor; the tensor itself, reshaped, when the range covers every row.
    func rows(_ range: Range<Int>) throws -> Tensor {
        let columns = shape.last!
        let all = range == 0..<count / columns
        return try Tensor(shape: [range.count, columns],
                           scalars: all ? scalars : Array(scalars[range.lowerBound * columns..<range.upperBound * columns]))
    }

    /// Writes `source` (`[rows, columns]`) over rows `range` of the tensor viewed as a matrix.
    mutating func setRows(_ range: Range<Int>, from source: Tensor) {
        let columns = shape.last!
        precondition(source.count == range.count * columns, "setRows: \(source.shape) into \(range.count) rows")
        scalars[range.lowerBound * columns..<range.upperBound * columns] = source.scalars[...]
    }
}
