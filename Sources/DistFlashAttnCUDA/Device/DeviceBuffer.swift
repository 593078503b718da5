import DistFlashAttn

/// Device memory owned by this object, from the device's stream-ordered pool, freed when it goes away (the free
/// is ordered after all work queued on the compute stream, so a kernel still reading it is never cut short).
final class DeviceBuffer: @unchecked Sendable {
    // Invariant: `address` is owned exclusively and freed exactly once, in deinit.
    let device: CUDADevice
    let address: UInt64
    let bytes: Int

    init(_ device: CUDADevice, bytes: Int) throws {
        self.device = device
        self.bytes = max(bytes, 4)
        try device.makeCurrent()
        var address: UInt64 = 0
        try device.driver.check(device.driver.cuMemAllocAsync(&address, self.bytes, device.stream),
                                "cuMemAllocAsync(\(self.bytes) bytes)", hint: "out of GPU memory?")
        self.address = address
    }

    deinit {
        _ = try? device.makeCurrent()
        _ = device.driver.cuMemFreeAsync(address, device.stream)
    }

    /// A buffer holding a copy of `values`.
    static func upload<T>(_ device: CUDADevice, _ values: [T]) throws -> DeviceBuffer {
        let buffer = try DeviceBuffer(device, bytes: values.count * MemoryLayout<T>.stride)
        if !values.isEmpty {
            // From pageable memory the call returns once `values` is staged, so they may go away after it.
            try values.withUnsafeBytes { raw in
                try device.driver.check(device.driver.cuMemcpyHtoDAsync(buffer.address, raw.baseAddress!, raw.count,
                                                                        device.stream), "cuMemcpyHtoDAsync")
            }
        }
        return buffer
    }

    /// Copies `count` values of `T` from `byteOffset` on, after the work queued before it.
    func download<T>(_ count: Int, as type: T.Type, initial: T, byteOffset: Int = 0) throws -> [T] {
        var values = [T](repeating: initial, count: count)
        if count > 0 {
            try device.makeCurrent()
            try values.withUnsafeMutableBytes { raw in
                try device.driver.check(device.driver.cuMemcpyDtoHAsync(raw.baseAddress!, address + UInt64(byteOffset), raw.count,
                                                                        device.stream), "cuMemcpyDtoHAsync")
            }
            try device.synchronize()
        }
        return values
    }

    /// Sets `count` 32-bit words to `bits` (e.g. 0, or 0xff800000 for −∞ in fp32).
    func fill32(_ bits: UInt32, count: Int) throws {
        try device.makeCurrent()
        try device.driver.check(device.driver.cuMemsetD32Async(address, bits, count, device.stream), "cuMemsetD32Async")
    }

    /// Sets `count` 16-bit words to `bits`.
    func fill16(_ bits: UInt16, count: Int) throws {
        try device.makeCurrent()
        try device.driver.check(device.driver.cuMemsetD16Async(address, bits, count, device.stream), "cuMemsetD16Async")
    }
}
