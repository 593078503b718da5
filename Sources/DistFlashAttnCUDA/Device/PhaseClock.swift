import DistFlashAttn
import Foundation

/// GPU time spent in named phases of a larger piece of work (the block primitives between two `finish` calls, a
/// benchmark's timed runs, a training step's attention, GEMMs and optimizer): each
/// `time` call brackets its work with a pair of CUDA events on the device's compute stream, and `collect` sums
/// each phase's event intervals once the stream has passed them. Events are recycled, so a step of a few hundred
/// phases creates none after the first. With `gaps`, `collect` also reports the stream's time between one phase's
/// end and the next one's start as "gap:A→B": work no phase covers (fills, copies, waits for another stream) or
/// the device waiting for the host to queue B.
public final class PhaseClock: @unchecked Sendable {
    // Invariant: `pending` and `spare` are touched only while holding `lock`.
    private let lock = NSLock()
    private var pending: [(phase: String, start: OpaquePointer?, end: OpaquePointer?)] = []
    private var spare: [OpaquePointer?] = []
    public let device: CUDADevice
    public let gaps: Bool

    public init(device: CUDADevice, gaps: Bool = false) { (self.device, self.gaps) = (device, gaps) }

    deinit {
        for event in spare + pending.flatMap({ [$0.start, $0.end] }) { _ = device.driver.cuEventDestroy(event) }
    }

    /// Runs `work` (GPU work queued on the compute stream) inside `phase`. Phases may repeat; they must not nest.
    public func time<T>(_ phase: String, _ work: () throws -> T) throws -> T {
        let driver = device.driver
        let (start, end) = (try event(), try event())
        do {
            try driver.check(driver.cuEventRecord(start, device.stream), "cuEventRecord")
            let result = try work()
            try driver.check(driver.cuEventRecord(end, device.stream), "cuEventRecord")
            lock.withLock { pending.append((phase, start, end)) }
            return result
        } catch {
            lock.withLock { spare += [start, end] }
            throw error
        }
    }

    /// Seconds of GPU time per phase since the last call, and with `gaps` between consecutive phases (waits for
    /// the stream to pass the last event).
    public func collect() throws -> [String: Double] {
        let driver = device.driver
        let taken = lock.withLock { defer { pending = [] }; return pending }
        defer { lock.withLock { spare += taken.flatMap { [$0.start, $0.end] } } }
        func seconds(from first: OpaquePointer?, to second: OpaquePointer?) throws -> Double {
            var milliseconds: Float = 0
            try driver.check(driver.cuEventElapsedTime(&milliseconds, first, second), "cuEventElapsedTime")
            return Double(milliseconds) / 1e3
        }
        var totals: [String: Double] = [:]
        for (index, (phase, start, end)) in taken.enumerated() {
            try driver.check(driver.cuEventSynchronize(end), "cuEventSynchronize")
            totals[phase, default: 0] += try seconds(from: start, to: end)
            if gaps, index > 0 {
                let previous = taken[index - 1]
                let gap = max(0, try seconds(from: previous.end, to: start))
                totals["gap:\(previous.phase)→\(phase)", default: 0] += gap
            }
        }
        return totals
    }

    private func event() throws -> OpaquePointer? {
        if let reused = lock.withLock({ spare.popLast() }) { return reused }
        var event: OpaquePointer?
        try device.makeCurrent()  // a new event belongs to the current context: the device's
        try device.driver.check(device.driver.cuEventCreate(&event, 0), "cuEventCreate")  // timing enabled
        return event
    }
}
