import DistFlashAttn
import Foundation

/// One GPU: the driver, its primary context, the run-time compiler and compiled kernels.
///
/// Every call makes the context current on the calling thread first, so a device may be used from any thread
/// (calls are serialised by the driver on the default stream).
public final class CUDADevice: @unchecked Sendable {
    // Invariant: immutable after init except `modules`, which is guarded by `lock`.
    let driver: CUDADriver
    let nvrtc: NVRTC
    public let ordinal: Int
    public let name: String
    /// Compute capability, e.g. (9, 0) on H100.
    public let capability: (major: Int, minor: Int)
    private let context: OpaquePointer?
    private let lock = NSLock()
    private var modules: [String: OpaquePointer?] = [:]
    /// Serialises whole primitives (upload, launch, download) of threads sharing this device.
    private let useLock = NSLock()

    /// Runs `body` with the device to itself.
    func exclusive<R>(_ body: () throws -> R) rethrows -> R {
        useLock.lock()
        defer { useLock.unlock() }
        return try body()
    }

    /// Opens GPU `ordinal`. Throws one clear sentence when there is no driver or no such GPU.
    public init(ordinal: Int = 0) throws {
        driver = try CUDADriver()
        nvrtc = try NVRTC()
        try driver.check(driver.cuInit(0), "cuInit", hint: "is an NVIDIA GPU with its driver present?")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard (0..<Int(count)).contains(ordinal) else {
            throw DistFlashError(.runtime, "--device \(ordinal): this machine has \(count) GPU(s) (0..<\(count))")
        }
        self.ordinal = ordinal
        var device: Int32 = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet")
        var buffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&buffer, 256, device), "cuDeviceGetName")
        name = String(cString: buffer)
        var major: Int32 = 0, minor: Int32 = 0
        try driver.check(driver.cuDeviceGetAttribute(&major, 75, device), "cuDeviceGetAttribute(major)")
        try driver.check(driver.cuDeviceGetAttribute(&minor, 76, device), "cuDeviceGetAttribute(minor)")
        capability = (Int(major), Int(minor))
        var context: OpaquePointer?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        self.context = context
    }

    func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuCtxSynchronize(), "cuCtxSynchronize", hint: "a kernel failed; run under compute-sanitizer")
    }

    /// The architecture NVRTC compiles for: sm_90a on Hopper (wgmma/TMA), sm_XY elsewhere.
    public var architecture: String {
        "sm_\(capability.major)\(capability.minor)" + (capability.major == 9 ? "a" : "")
    }

    /// The kernel `function` of `source`, compiled once per process (and cached on disk across processes).
    func kernel(_ function: String, source: String) throws -> OpaquePointer? {
        try makeCurrent()
        let module: OpaquePointer?
        lock.lock()
        defer { lock.unlock() }
        if let loaded = modules[source] {
            module = loaded
        } else {
            let cubin = try KernelCompiler(nvrtc: nvrtc).compile(source, architecture: architecture)
            var loaded: OpaquePointer?
            try cubin.withUnsafeBytes { bytes in
                try driver.check(driver.cuModuleLoadData(&loaded, bytes.baseAddress!), "cuModuleLoadData")
            }
            modules[source] = loaded
            module = loaded
        }
        var handle: OpaquePointer?
        try driver.check(driver.cuModuleGetFunction(&handle, module, function), "cuModuleGetFunction(\(function))")
        return handle
    }

    /// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KiB a launch may take).
    func allowSharedMemory(_ kernel: OpaquePointer?, bytes: Int) throws {
        let maxDynamicSharedSizeBytes: Int32 = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        try driver.check(driver.cuFuncSetAttribute(kernel, maxDynamicSharedSizeBytes, Int32(bytes)),
                         "cuFuncSetAttribute(max dynamic shared memory = \(bytes) bytes)")
    }

    /// A kernel argument, passed by value.
    enum Argument {
        case pointer(UInt64)
        case int(Int32)
        case float(Float)
    }

    func launch(_ kernel: OpaquePointer?, grid: (Int, Int, Int), block: Int, sharedBytes: Int = 0,
                _ arguments: [Argument]) throws {
        try makeCurrent()
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 8 * arguments.count, alignment: 8)
        defer { storage.deallocate() }
        var pointers: [UnsafeMutableRawPointer?] = []
        for (i, argument) in arguments.enumerated() {
            let slot = storage + 8 * i
            switch argument {
            case .pointer(let value): slot.storeBytes(of: value, as: UInt64.self)
            case .int(let value): slot.storeBytes(of: value, as: Int32.self)
            case .float(let value): slot.storeBytes(of: value, as: Float.self)
            }
            pointers.append(slot)
        }
        try pointers.withUnsafeMutableBufferPointer { params in
            try driver.check(driver.cuLaunchKernel(kernel, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                   UInt32(block), 1, 1, UInt32(sharedBytes), nil, params.baseAddress,
                                                   nil), "cuLaunchKernel")
        }
    }
}
