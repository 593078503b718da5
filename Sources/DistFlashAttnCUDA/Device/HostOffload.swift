import DistFlashAttn
import Foundation

/// Device tensors parked in pinned host memory while the GPU does other work, moved by a copy stream of their own
/// so the transfers overlap the compute stream's work instead of adding to it. A trainer parks each layer's
/// checkpoint in the forward and fetches it back one layer ahead in the backward: the checkpoint then costs host
/// memory, not device memory.
///
/// Ordering (all asynchronous; the host never waits):
/// - `park`: the copy stream waits for the compute stream's work queued so far, then copies the tensors out. Their
///   device memory is held until the next `park` (or `releaseParked`), which makes the compute stream wait for the
///   copies before it frees them — by then a layer's work has been queued after them, so the wait costs nothing
///   unless the copies are slower than that layer.
/// - `fetch`: the device memory is taken from the pool on the compute stream, the copy stream waits for that, then
///   copies in. `load` makes the compute stream wait for the copy before it reads the tensor.
/// - Pinned buffers are reused (pinning is slow): every copy that reads or writes one runs on the one copy stream,
///   in the order queued, so a buffer handed to a new tensor is never written before the last copy of the old one.
public final class HostOffload: @unchecked Sendable {
    // Invariant: `spare` and `leaving` are touched only while holding `lock`; a pinned buffer is either in `spare`
    // or owned by exactly one live `Parked`.
    public let device: CUDADevice
    private let stream: OpaquePointer?
    private let lock = NSLock()
    /// Pinned buffers no parked tensor holds, by size in bytes.
    private var spare: [Int: [UnsafeMutableRawPointer]] = [:]
    /// The last parked group's device tensors and the event after their copies out.
    private var leaving: (tensors: [DeviceTensor], copied: OpaquePointer?)?

    public init(device: CUDADevice) throws {
        self.device = device
        try device.makeCurrent()
        var stream: OpaquePointer?
        let nonBlocking: UInt32 = 1  // CU_STREAM_NON_BLOCKING
        try device.driver.check(device.driver.cuStreamCreate(&stream, nonBlocking), "cuStreamCreate (copy stream)")
        self.stream = stream
    }

    deinit {
        // Every `Parked` holds this object, so none is left; the copies may still be running. Once the host has
        // waited for them, the last group's device memory may go without a wait on the compute stream.
        _ = try? device.makeCurrent()
        _ = device.driver.cuStreamSynchronize(stream)
        if let leaving { _ = device.driver.cuEventDestroy(leaving.copied) }
        for buffer in spare.values.joined() { _ = device.driver.cuMemFreeHost(buffer) }
        _ = device.driver.cuStreamDestroy(stream)
    }

    /// A tensor's contents in pinned host memory (or on their way there or back).
    public final class Parked: @unchecked Sendable {
        // Invariant: `fetched` is touched only while holding the owner's lock.
        public let shape: [Int]
        public let precision: DeviceTensor.Precision
        let host: UnsafeMutableRawPointer
        let bytes: Int
        let owner: HostOffload
        /// The device copy `fetch` queued and the event after its copy in; `load` takes it.
        var fetched: (tensor: DeviceTensor, arrived: OpaquePointer?)?

        init(shape: [Int], precision: DeviceTensor.Precision, host: UnsafeMutableRawPointer, bytes: Int,
             owner: HostOffload) {
            (self.shape, self.precision, self.host, self.bytes, self.owner) = (shape, precision, host, bytes, owner)
        }

        deinit { owner.retire(self) }

        /// Queues the copy back to the device now (so it overlaps the work queued next); `load` waits for it.
        public func fetch() throws { try owner.fetch(self) }

        /// The tensor on the device again (fetched now if `fetch` was not called), ordered before whatever the
        /// compute stream is given next.
        public func load() throws -> DeviceTensor { try owner.load(self) }
    }

    /// Queues the copies of `tensors` (one group, e.g. a layer's checkpoint) to host memory after the work queued
    /// so far on the compute stream, and releases the previous group's device memory (see the ordering above).
    public func park(_ tensors: [DeviceTensor]) throws -> [Parked] {
        let hosts = try lock.withLock {
            try device.makeCurrent()
            try releaseLeaving()
            var hosts: [UnsafeMutableRawPointer] = []
            do {
                for tensor in tensors { hosts.append(try pinned(tensor.byteCount)) }
                try copyOut(tensors, to: hosts)
            } catch {
                for (host, tensor) in zip(hosts, tensors) { spare[tensor.byteCount, default: []].append(host) }
                throw error
            }
            return hosts
        }
        // Made outside the lock: a `Parked` that goes away takes the lock to give its buffer back.
        return zip(tensors, hosts).map {
            Parked(shape: $0.shape, precision: $0.precision, host: $1, bytes: $0.byteCount, owner: self)
        }
    }

    /// Releases the last parked group's device memory once its copies are done (in stream order).
    public func releaseParked() throws {
        try lock.withLock {
            try device.makeCurrent()
            try releaseLeaving()
        }
    }

    // MARK: Private (called with `lock` held, except `retire`, which takes it)

    /// Queues the copies of `tensors` into `hosts` after the compute stream's queued work; they become `leaving`.
    private func copyOut(_ tensors: [DeviceTensor], to hosts: [UnsafeMutableRawPointer]) throws {
        let driver = device.driver
        let produced = try event()
        defer { _ = driver.cuEventDestroy(produced) }
        try driver.check(driver.cuEventRecord(produced, device.stream), "cuEventRecord")
        try driver.check(driver.cuStreamWaitEvent(stream, produced, 0), "cuStreamWaitEvent")
        try afterQueuedCopies(keeping: tensors) {
            for (tensor, host) in zip(tensors, hosts) where tensor.byteCount > 0 {
                try driver.check(driver.cuMemcpyDtoHAsync(host, tensor.address, tensor.byteCount, stream),
                                 "cuMemcpyDtoHAsync (\(tensor.byteCount) bytes to pinned host memory)")
            }
            leaving = (tensors, try recordedEvent(on: stream))
        }
    }

    private func releaseLeaving() throws {
        guard let (tensors, copied) = leaving else { return }
        leaving = nil
        defer { _ = device.driver.cuEventDestroy(copied) }
        try afterQueuedCopies(keeping: tensors) {  // their frees are queued on the compute stream after this wait
            try device.driver.check(device.driver.cuStreamWaitEvent(device.stream, copied, 0), "cuStreamWaitEvent")
        }
    }

    fileprivate func fetch(_ parked: Parked) throws {
        try lock.withLock {
            guard parked.fetched == nil else { return }
            try device.makeCurrent()
            let driver = device.driver
            let tensor = try DeviceTensor(device, shape: parked.shape, precision: parked.precision)
            let allocated = try event()
            defer { _ = driver.cuEventDestroy(allocated) }
            try driver.check(driver.cuEventRecord(allocated, device.stream), "cuEventRecord")
            try driver.check(driver.cuStreamWaitEvent(stream, allocated, 0), "cuStreamWaitEvent")
            try afterQueuedCopies(keeping: [tensor]) {
                if parked.bytes > 0 {
                    try driver.check(driver.cuMemcpyHtoDAsync(tensor.address, parked.host, parked.bytes, stream),
                                     "cuMemcpyHtoDAsync (\(parked.bytes) bytes from pinned host memory)")
                }
                parked.fetched = (tensor, try recordedEvent(on: stream))
            }
        }
    }

    fileprivate func load(_ parked: Parked) throws -> DeviceTensor {
        try fetch(parked)
        return try lock.withLock {
            try device.makeCurrent()
            guard let (tensor, arrived) = parked.fetched else {
                throw DistFlashError(.runtime, "a parked tensor was loaded while another thread loaded it")
            }
            parked.fetched = nil
            defer { _ = device.driver.cuEventDestroy(arrived) }
            try afterQueuedCopies(keeping: [tensor]) {
                try device.driver.check(device.driver.cuStreamWaitEvent(device.stream, arrived, 0), "cuStreamWaitEvent")
            }
            return tensor
        }
    }

    /// Runs `queue`, which queues copies of `tensors` or orders the compute stream after them. Should it fail,
    /// the host waits for the copy stream before `tensors` may go, so no copy outlives the memory it touches.
    private func afterQueuedCopies(keeping tensors: [DeviceTensor], _ queue: () throws -> Void) throws {
        do {
            try withExtendedLifetime(tensors, queue)
        } catch {
            _ = device.driver.cuStreamSynchronize(stream)
            throw error
        }
    }

    /// Holds the copy stream's next copies back for `microseconds` (tests use it to show that no memory is read,
    /// freed or reused before the copy that needs it has ended).
    func holdCopies(microseconds: Int) throws {
        try lock.withLock {
            try device.makeCurrent()
            try device.driver.check(device.driver.cuLaunchHostFunc(stream, { usleep(UInt32(Int(bitPattern: $0))) },
                                                                   UnsafeMutableRawPointer(bitPattern: microseconds)),
                                    "cuLaunchHostFunc")
        }
    }

    /// Takes back a parked tensor's pinned buffer (see the ordering above for why it may be reused at once).
    fileprivate func retire(_ parked: Parked) {
        lock.withLock {
            if let (tensor, arrived) = parked.fetched {
                // Fetched, never loaded: the compute stream must not free the copy's target before the copy ends.
                _ = try? device.makeCurrent()
                withExtendedLifetime(tensor) { _ = device.driver.cuStreamWaitEvent(device.stream, arrived, 0) }
                _ = device.driver.cuEventDestroy(arrived)
            }
            spare[parked.bytes, default: []].append(parked.host)
        }
    }

    /// A pinned buffer of `bytes`: a spare one of that size, or a new one.
    private func pinned(_ bytes: Int) throws -> UnsafeMutableRawPointer {
        if let reused = spare[bytes]?.popLast() { return reused }
        var host: UnsafeMutableRawPointer?
        try device.driver.check(device.driver.cuMemAllocHost(&host, max(bytes, 4)),
                                "cuMemAllocHost(\(bytes) bytes)", hint: "out of pinned host memory?")
        guard let host else { throw DistFlashError(.runtime, "cuMemAllocHost(\(bytes) bytes) returned no memory") }
        return host
    }

    /// An event without timing (cheaper to record and wait on).
    private func event() throws -> OpaquePointer? {
        var event: OpaquePointer?
        try device.driver.check(device.driver.cuEventCreate(&event, 2), "cuEventCreate")  // CU_EVENT_DISABLE_TIMING
        return event
    }

    /// A new event recorded on `stream` (destroyed again if the record fails).
    private func recordedEvent(on stream: OpaquePointer?) throws -> OpaquePointer? {
        let recorded = try event()
        do {
            try device.driver.check(device.driver.cuEventRecord(recorded, stream), "cuEventRecord")
        } catch {
            _ = device.driver.cuEventDestroy(recorded)
            throw error
        }
        return recorded
    }
}
