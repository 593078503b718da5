import DistFlashAttn
import Foundation

/// One GPU: the driver, its primary context, its compute stream, the run-time compiler and compiled kernels.
///
/// Every call makes the context current on the calling thread first, so a device may be used from any thread.
/// Kernels, copies, allocations and frees all go to one compute stream, in order; memory comes from the device's
/// stream-ordered pool, which keeps freed blocks for reuse (the caching allocator), so a free never waits for
/// the GPU and never stalls work in flight on other streams (NCCL's).
public final class CUDADevice: @unchecked Sendable {
    // Invariant: immutable after init except `modules` and `functions`, which are guarded by `lock`.
    let driver: CUDADriver
    let nvrtc: NVRTC
    public let ordinal: Int
    public let name: String
    /// Compute capability, e.g. (9, 0) on H100.
    public let capability: (major: Int, minor: Int)
    private let context: OpaquePointer?
    /// The stream every kernel, copy, allocation and free of this device is ordered on.
    let stream: OpaquePointer?
    private let pool: OpaquePointer?
    private let lock = NSLock()
    private var modules: [String: OpaquePointer?] = [:]
    /// Loaded functions by name, with the source each came from.
    private var functions: [String: [(source: String, handle: OpaquePointer?)]] = [:]
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
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        var stream: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&stream, 1), "cuStreamCreate")  // non-blocking
        self.stream = stream
        var pool: OpaquePointer?
        try driver.check(driver.cuDeviceGetDefaultMemPool(&pool, device), "cuDeviceGetDefaultMemPool",
                         hint: "the stream-ordered allocator needs CUDA 11.2 or later")
        self.pool = pool
        var keepEverything = UInt64.max
        let releaseThreshold: Int32 = 4  // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: keep freed memory for reuse
        try driver.check(driver.cuMemPoolSetAttribute(pool, releaseThreshold, &keepEverything), "cuMemPoolSetAttribute")
    }

    deinit { _ = driver.cuStreamDestroy(stream) }

    func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// Waits for everything queued on the compute stream.
    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize",
                         hint: "a kernel failed; run under compute-sanitizer")
    }

    /// The most device memory this process's tensors have held at once since the last reset, in bytes.
    public func peakMemoryBytes(reset: Bool = false) throws -> Int {
        let usedMemoryHigh: Int32 = 8  // CU_MEMPOOL_ATTR_USED_MEM_HIGH
        var bytes: UInt64 = 0
        try driver.check(driver.cuMemPoolGetAttribute(pool, usedMemoryHigh, &bytes), "cuMemPoolGetAttribute")
        if reset {
            var zero: UInt64 = 0
            try driver.check(driver.cuMemPoolSetAttribute(pool, usedMemoryHigh, &zero), "cuMemPoolSetAttribute")
        }
        return Int(bytes)
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
        // By name first: hashing a whole source (tens of KB) on every launch would cost tens of microseconds.
        if let known = functions[function]?.first(where: { $0.source == source }) { return known.handle }
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
        functions[function, default: []].append((source, handle))
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
        case int64(Int64)
        case float(Float)
        case tensorMap(TensorMap)

        /// Bytes and alignment of the value in host memory (the driver copies it into the parameter space).
        var layout: (size: Int, alignment: Int) {
            if case .tensorMap = self { return (128, 64) }
            return (8, 8)
        }

        /// Where each of `arguments` sits in one host buffer (each at its alignment), and the buffer's size.
        static func packing(_ arguments: [Argument]) -> (offsets: [Int], size: Int) {
            var offsets: [Int] = [], end = 0
            for argument in arguments {
                let (size, alignment) = argument.layout
                end = (end + alignment - 1) / alignment * alignment
                offsets.append(end)
                end += size
            }
            return (offsets, end)
        }
    }

    func launch(_ kernel: OpaquePointer?, grid: (Int, Int, Int), block: Int, sharedBytes: Int = 0,
                _ arguments: [Argument]) throws {
        try makeCurrent()
        let (offsets, size) = Argument.packing(arguments)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(size, 8), alignment: 64)
        defer { storage.deallocate() }
        var pointers: [UnsafeMutableRawPointer?] = []
        for (argument, offset) in zip(arguments, offsets) {
            let slot = storage + offset
            switch argument {
            case .pointer(let value): slot.storeBytes(of: value, as: UInt64.self)
            case .int(let value): slot.storeBytes(of: value, as: Int32.self)
            case .int64(let value): slot.storeBytes(of: value, as: Int64.self)
            case .float(let value): slot.storeBytes(of: value, as: Float.self)
            case .tensorMap(let map):
                for (i, word) in map.words.enumerated() {
                    slot.storeBytes(of: word, toByteOffset: 8 * i, as: UInt64.self)
                }
            }
            pointers.append(slot)
        }
        try pointers.withUnsafeMutableBufferPointer { params in
            try driver.check(driver.cuLaunchKernel(kernel, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                   UInt32(block), 1, 1, UInt32(sharedBytes), stream, params.baseAddress,
                                                   nil), "cuLaunchKernel")
        }
    }
}
