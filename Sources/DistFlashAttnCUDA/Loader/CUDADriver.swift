import DistFlashAttn

/// The CUDA driver API functions this package uses, loaded from libcuda at run time.
/// Types follow cuda.h: CUresult is an int, handles are pointers, CUdeviceptr is a 64-bit integer.
struct CUDADriver: @unchecked Sendable {
    // Invariant: only immutable C function pointers, callable from any thread.
    typealias Result = Int32
    typealias Handle = OpaquePointer?

    let library: DynamicLibrary
    let cuInit: @convention(c) (UInt32) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (Handle) -> Result
    let cuCtxSynchronize: @convention(c) () -> Result
    let cuMemAllocAsync: @convention(c) (UnsafeMutablePointer<UInt64>, Int, Handle) -> Result
    let cuMemFreeAsync: @convention(c) (UInt64, Handle) -> Result
    let cuDeviceGetDefaultMemPool: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Result
    let cuMemPoolSetAttribute: @convention(c) (Handle, Int32, UnsafeMutableRawPointer) -> Result
    let cuMemPoolGetAttribute: @convention(c) (Handle, Int32, UnsafeMutableRawPointer) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer, Int, Handle) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Handle) -> Result
    let cuMemsetD32Async: @convention(c) (UInt64, UInt32, Int, Handle) -> Result
    let cuMemAllocHost: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int) -> Result
    let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer) -> Result
    let cuMemsetD16Async: @convention(c) (UInt64, UInt16, Int, Handle) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UnsafePointer<CChar>) -> Result
    let cuFuncSetAttribute: @convention(c) (Handle, Int32, Int32) -> Result
    let cuLaunchKernel: @convention(c) (Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuEventRecord: @convention(c) (Handle, Handle) -> Result
    let cuEventSynchronize: @convention(c) (Handle) -> Result
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Result
    let cuEventDestroy: @convention(c) (Handle) -> Result
    let cuEventQuery: @convention(c) (Handle) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuStreamDestroy: @convention(c) (Handle) -> Result
    let cuStreamSynchronize: @convention(c) (Handle) -> Result
    let cuStreamWaitEvent: @convention(c) (Handle, Handle, UInt32) -> Result
    let cuLaunchHostFunc: @convention(c) (Handle, @convention(c) (UnsafeMutableRawPointer?) -> Void,
                                          UnsafeMutableRawPointer?) -> Result
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    /// (map, data type, rank, address, sizes, byte strides of axes 1…, box, element strides, interleave, swizzle,
    /// L2 promotion, out-of-bounds fill); the enums are C ints. Drivers before CUDA 12 lack it (nil).
    let cuTensorMapEncodeTiled: (@convention(c) (UnsafeMutableRawPointer, Int32, UInt32, UnsafeMutableRawPointer?,
                                                 UnsafePointer<UInt64>, UnsafePointer<UInt64>, UnsafePointer<UInt32>,
                                                 UnsafePointer<UInt32>, Int32, Int32, Int32, Int32) -> Result)?

    init() throws {
        library = try DynamicLibrary("the CUDA driver (libcuda)", candidates: ["libcuda.so.1", "libcuda.so"],
                                     environment: "DISTFLASH_LIBCUDA")
        cuInit = try library.symbol("cuInit")
        cuDeviceGetCount = try library.symbol("cuDeviceGetCount")
        cuDeviceGet = try library.symbol("cuDeviceGet")
        cuDeviceGetName = try library.symbol("cuDeviceGetName")
        cuDeviceGetAttribute = try library.symbol("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try library.symbol("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try library.symbol("cuCtxSetCurrent")
        cuCtxSynchronize = try library.symbol("cuCtxSynchronize")
        cuMemAllocAsync = try library.symbol("cuMemAllocAsync")
        cuMemFreeAsync = try library.symbol("cuMemFreeAsync")
        cuDeviceGetDefaultMemPool = try library.symbol("cuDeviceGetDefaultMemPool")
        cuMemPoolSetAttribute = try library.symbol("cuMemPoolSetAttribute")
        cuMemPoolGetAttribute = try library.symbol("cuMemPoolGetAttribute")
        cuMemcpyHtoDAsync = try library.symbol("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try library.symbol("cuMemcpyDtoHAsync_v2")
        cuMemsetD32Async = try library.symbol("cuMemsetD32Async")
        cuMemAllocHost = try library.symbol("cuMemAllocHost_v2")
        cuMemFreeHost = try library.symbol("cuMemFreeHost")
        cuMemsetD16Async = try library.symbol("cuMemsetD16Async")
        cuModuleLoadData = try library.symbol("cuModuleLoadData")
        cuModuleGetFunction = try library.symbol("cuModuleGetFunction")
        cuFuncSetAttribute = try library.symbol("cuFuncSetAttribute")
        cuLaunchKernel = try library.symbol("cuLaunchKernel")
        cuEventCreate = try library.symbol("cuEventCreate")
        cuEventRecord = try library.symbol("cuEventRecord")
        cuEventSynchronize = try library.symbol("cuEventSynchronize")
        cuEventElapsedTime = try library.symbol("cuEventElapsedTime")
        cuEventDestroy = try library.symbol("cuEventDestroy_v2")
        cuEventQuery = try library.symbol("cuEventQuery")
        cuStreamCreate = try library.symbol("cuStreamCreate")
        cuStreamDestroy = try library.symbol("cuStreamDestroy_v2")
        cuStreamSynchronize = try library.symbol("cuStreamSynchronize")
        cuStreamWaitEvent = try library.symbol("cuStreamWaitEvent")
        cuLaunchHostFunc = try library.symbol("cuLaunchHostFunc")
        cuGetErrorName = try library.symbol("cuGetErrorName")
        cuTensorMapEncodeTiled = try? library.symbol("cuTensorMapEncodeTiled")
    }

    /// Throws unless `result` is CUDA_SUCCESS; the error names the CUDA error, the call and a hint.
    func check(_ result: Result, _ call: String, hint: String = "") throws {
        guard result != 0 else { return }
        var name: UnsafePointer<CChar>?
        _ = cuGetErrorName(result, &name)
        let text = name.map { String(cString: $0) } ?? "CUDA error \(result)"
        throw DistFlashError(.runtime, "\(call) failed: \(text)" + (hint.isEmpty ? "" : " — \(hint)"))
    }
}
