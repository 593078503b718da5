import DistFlashAttn

/// Device memory owned by this object, freed when it goes away.
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
        try device.driver.check(device.driver.cuMemAlloc(&address, self.bytes), "cuMemAlloc(\(self.bytes) bytes)",
                                hint: "out of GPU memory?")
        self.address = address
    }

    deinit { _ = device.driver.cuMemFree(address) }

    /// A buffer holding a copy of `values`.
    static func upload<T>(_ device: CUDADevice, _ values: [T]) throws -> DeviceBuffer {
        let buffer = try DeviceBuffer(device, bytes: values.count * MemoryLayout<T>.stride)
        if !values.isEmpty {
            try values.withUnsafeBytes { raw in
                try device.driver.check(device.driver.cuMemcpyHtoD(buffer.address, raw.baseAddress!, raw.count),
                                        "cuMemcpyHtoD")
            }
        }
        return buffer
    }

    /// Copies the buffer into `count` values of `T`.
    func download<T>(_ count: Int, as type: T.Type, initial: T) throws -> [T] {
        var values = [T](repeating: initial, count: count)
        if count > 0 {
            try device.makeCurrent()
            try values.withUnsafeMutableBytes { raw in
                try device.driver.check(device.driver.cuMemcpyDtoH(raw.baseAddress!, address, raw.count), "cuMemcpyDtoH")
            }
        }
        return values
    }
}
