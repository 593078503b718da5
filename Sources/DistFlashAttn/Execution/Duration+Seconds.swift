extension Duration {
    /// The duration in seconds, e.g. of `ContinuousClock.now - start`.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
