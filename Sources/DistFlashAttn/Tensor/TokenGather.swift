extension Tensor {
    /// The slices at `indices` along `axis`, in that order: for tokens of `[B, S, H, D]` use axis 1, for
    /// LSE `[B, H, S]` axis 2.
    public func gather(_ indices: [Int], axis: Int) -> Tensor {
        var newShape = shape
        newShape[axis] = indices.count
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
        var out = Tensor(shape: newShape)
        for o in 0..<outer {
            for (n, index) in indices.enumerated() {
                let src = (o * shape[axis] + index) * inner, dst = (o * indices.count + n) * inner
                out.scalars[dst..<dst + inner] = scalars[src..<src + inner]
            }
        }
        return out
    }

    /// Writes the slices of `source` (in order) to positions `indices` along `axis`; the inverse of `gather`.
    public mutating func scatter(_ source: Tensor, to indices: [Int], axis: Int) {
        precondition(source.shape[axis] == indices.count, "scatter: \(indices.count) indices for \(source.shape[axis]) slices")
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
        for o in 0..<outer {
            for (n, index) in indices.enumerated() {
                let dst = (o * shape[axis] + index) * inner, src = (o * indices.count + n) * inner
                scalars[dst..<dst + inner] = source.scalars[src..<src + inner]
            }
        }
    }
}
