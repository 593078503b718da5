import DistFlashAttnCUDA
import Testing

@Suite("Phase clock")
struct PhaseClockTests {
    /// Two timed fills with an untimed 256 MiB fill between them: the gap covers the untimed one, which a fill of
    /// that size cannot finish in 10 µs; a clock without gaps reports the phases alone.
    @Test("phases and the gap between them", .enabled(if: gpu != nil), arguments: [true, false])
    func gaps(_ measured: Bool) throws {
        let clock = PhaseClock(device: gpu!, gaps: measured)
        let kernels = TrainingKernels(device: gpu!)
        let (small, large) = (try DeviceTensor.unfilled(gpu!, shape: [4099], precision: .float32),
                              try DeviceTensor.unfilled(gpu!, shape: [64 << 20], precision: .float32))
        try clock.time("first") { try kernels.fill(small, with: 1) }
        try kernels.fill(large, with: 2)
        try clock.time("second") { try kernels.fill(small, with: 3) }
        let times = try clock.collect()
        #expect(Set(times.keys) == (measured ? ["first", "second", "gap:first→second"] : ["first", "second"]))
        #expect(times["first"]! > 0 && times["second"]! > 0)
        if measured { #expect(times["gap:first→second"]! > 10e-6) }
        #expect(try clock.collect().isEmpty)  // collected once
    }
}
