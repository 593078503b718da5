import DistFlashAttn

/// NVRTC, the run-time CUDA C++ compiler, loaded at run time.
struct NVRTC: @unchecked Sendable {
    // Invariant: only immutable C function pointers.
    typealias Result = Int32
    typealias Program = OpaquePointer?

    let library: DynamicLibrary
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program>, UnsafePointer<CChar>, UnsafePointer<CChar>,
                                            Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                            UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcGetCUBINSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetCUBIN: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program>) -> Result
    let nvrtcGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?

    init() throws {
        library = try DynamicLibrary(
            "NVRTC (libnvrtc)",
            candidates: ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so"],
            environment: "DISTFLASH_LIBNVRTC")
        nvrtcVersion = try library.symbol("nvrtcVersion")
        nvrtcCreateProgram = try library.symbol("nvrtcCreateProgram")
        nvrtcCompileProgram = try library.symbol("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try library.symbol("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try library.symbol("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try library.symbol("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try library.symbol("nvrtcGetCUBIN")
        nvrtcDestroyProgram = try library.symbol("nvrtcDestroyProgram")
        nvrtcGetErrorString = try library.symbol("nvrtcGetErrorString")
    }

    var version: String {
        var (major, minor): (Int32, Int32) = (0, 0)
        _ = nvrtcVersion(&major, &minor)
        return "\(major).\(minor)"
    }

    func check(_ result: Result, _ call: String, log: String = "") throws {
        guard result != 0 else { return }
        let text = nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw DistFlashError(.runtime, "\(call) failed: \(text)" + (log.isEmpty ? "" : "\ncompile log:\n\(log)"))
    }
}
