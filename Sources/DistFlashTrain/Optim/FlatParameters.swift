import DistFlashAttn

/// The parameters seen as one flat vector: tensors in order, each row-major, so flat index i runs over
/// `0..<scalarCount`. ZeRO-1 gives each rank a contiguous range of this vector; these helpers move values between
/// the named tensors and such ranges.
extension Parameters {
    /// The pieces of `range` tensor by tensor: tensor index, element range inside that tensor, and where the piece
    /// starts relative to `range.lowerBound`. `range` must lie in `0..<scalarCount`.
    func flatSegments(in range: Range<Int>) -> [(tensor: Int, elements: Range<Int>, offset: Int)] {
        var segments: [(tensor: Int, elements: Range<Int>, offset: Int)] = []
        var start = 0
        for (t, tensor) in tensors.enumerated() {
            let end = start + tensor.count
            let lower = Swift.max(start, range.lowerBound), upper = Swift.min(end, range.upperBound)
            if lower < upper { segments.append((t, lower - start..<upper - start, lower - range.lowerBound)) }
            start = end
            if start >= range.upperBound { break }
        }
        return segments
    }

    /// The values at flat indices `range` (`range` within `0..<scalarCount`).
    public func flatScalars(in range: Range<Int>) -> [Float] {
        precondition(range.lowerBound >= 0 && range.upperBound <= scalarCount, "flat range \(range) out of bounds")
        var values = [Float](repeating: 0, count: range.count)
        for (t, elements, offset) in flatSegments(in: range) {
            values.replaceSubrange(offset..<offset + elements.count, with: tensors[t].scalars[elements])
        }
        return values
    }

    /// Writes `values` to flat indices `range` (an all-gather of ZeRO-1 shards writes each rank's slice this way).
    /// Throws `shapeMismatch` unless `values.count == range.count` and `range` lies within `0..<scalarCount`.
    public mutating func setFlatScalars(_ values: [Float], in range: Range<Int>) throws {
        guard values.count == range.count, range.lowerBound >= 0, range.upperBound <= scalarCount else {
            throw DistFlashError(.shapeMismatch, "flat parameter range \(range) with \(values.count) values: the "
                + "range must lie in 0..<\(scalarCount) and match the number of values")
        }
        for (t, elements, offset) in flatSegments(in: range) {
            tensors[t].scalars.replaceSubrange(elements, with: values[offset..<offset + elements.count])
        }
    }

    /// Contiguous flat ranges for `ranks` ZeRO-1 shards, sizes differing by at most one: rank r owns
    /// `r·N/P ..< (r+1)·N/P`, N = `scalarCount`.
    public func shardRanges(ranks: Int) -> [Range<Int>] {
        precondition(ranks >= 1, "shardRanges: ranks = \(ranks) must be ≥ 1")
        let n = scalarCount
        return (0..<ranks).map { r in r * n / ranks..<(r + 1) * n / ranks }
    }
}
