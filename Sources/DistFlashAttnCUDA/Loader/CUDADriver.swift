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
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    let cuMemFree: @convention(c) (UInt64) -> Result
    let cuMemcpyHtoD: @convention(c) (UInt64, UnsafeRawPointer, Int) -> Result
    let cuMemcpyDtoH: @convention(c) (UnsafeMutableRawPointer, UInt64, Int) -> Result
    let cuMemsetD32: @convention(c) (UInt64, UInt32, Int) -> Result
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
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

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
        cuMemAlloc = try library.symbol("cuMemAlloc_v2")
        cuMemFree = try library.symbol("cuMemFree_v2")
        cuMemcpyHtoD = try library.symbol("cuMemcpyHtoD_v2")
        cuMemcpyDtoH = try library.symbol("cuMemcpyDtoH_v2")
        cuMemsetD32 = try library.symbol("cuMemsetD32_v2")
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
        cuGetErrorName = try library.symbol("cuGetErrorName")
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
