@testable import DistFlashAttnCUDA
import Foundation
import Testing

/// Runs without a GPU: the watchdog is plain threads and clocks.
@Suite("Watchdog of calls that block inside NCCL")
struct BlockingCallWatchdogTests {
    final class Reports: @unchecked Sendable {
        // Invariant: `messages` is touched only while holding `lock`.
        private let lock = NSLock()
        private var messages: [String] = []
        func add(_ message: String) { lock.withLock { messages.append(message) } }
        var all: [String] { lock.withLock { messages } }
    }

    @Test("a call stuck past the limit is reported, naming it")
    func reportsStuckCall() {
        let reports = Reports()
        let watchdog = BlockingCallWatchdog(limit: 0.3) { reports.add($0) }
        watchdog.watch("rank 1: ncclGroupEnd of step 2") { Thread.sleep(forTimeInterval: 1.0) }
        #expect(reports.all.count == 1)
        #expect(reports.all.first?.contains("rank 1: ncclGroupEnd of step 2 has not returned after 0.3 s") == true,
                "\(reports.all)")
    }

    @Test("calls that return in time are never reported")
    func quietWhenCallsReturn() {
        let reports = Reports()
        let watchdog = BlockingCallWatchdog(limit: 0.5) { reports.add($0) }
        for _ in 0..<5 { watchdog.watch("quick call") { Thread.sleep(forTimeInterval: 0.1) } }
        Thread.sleep(forTimeInterval: 0.7)
        #expect(reports.all.isEmpty, "\(reports.all)")
    }
}
