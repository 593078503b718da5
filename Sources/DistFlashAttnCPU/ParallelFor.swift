import Dispatch
import Synchronization

/// Runs `count` independent tasks on `workers` threads, handing tasks out dynamically so uneven tasks (causal
/// rows) balance. `body(task, worker)` may use per-worker scratch indexed by `worker`.
package func parallelFor(count: Int, workers: Int, _ body: @Sendable (_ task: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(workers, count))
    if workers == 1 {
        for task in 0..<count { body(task, 0) }
        return
    }
    let next = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        while true {
            let task = next.add(1, ordering: .relaxed).oldValue
            if task >= count { break }
            body(task, worker)
        }
    }
}

/// A raw float buffer shared by parallel tasks.
/// Invariant (why `@unchecked Sendable` is sound): tasks write disjoint elements, and nobody reads an element
/// another task is writing until `parallelFor` has returned.
package struct SharedFloats: @unchecked Sendable {
    package let base: UnsafeMutablePointer<Float>
    package init(_ base: UnsafeMutablePointer<Float>) { self.base = base }
    package init(_ base: UnsafePointer<Float>) { self.base = UnsafeMutablePointer(mutating: base) }
}

/// Per-worker scratch memory: one buffer of `floats` floats for each worker, poisoned with NaN so reading an
/// element a kernel did not write shows up in the results instead of passing silently.
final class WorkerScratch: @unchecked Sendable {
    // Invariant: worker w only touches slice w.
    private let storage: UnsafeMutablePointer<Float>
    let floats: Int

    init(workers: Int, floats: Int) {
        self.floats = floats
        storage = .allocate(capacity: max(1, workers * floats))
        storage.initialize(repeating: .nan, count: max(1, workers * floats))
    }

    deinit { storage.deallocate() }

    func buffer(_ worker: Int) -> UnsafeMutablePointer<Float> { storage + worker * floats }
}
