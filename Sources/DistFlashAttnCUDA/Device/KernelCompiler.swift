import DistFlashAttn
import Foundation

/// Compiles CUDA C++ with NVRTC for one architecture, caching the CUBIN on disk keyed by a hash of the source,
/// options, architecture and NVRTC version. Cache folder: `DISTFLASH_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/distflash`, else `~/.cache/distflash`.
struct KernelCompiler {
    let nvrtc: NVRTC

    static let options = ["-std=c++17", "-default-device", "-lineinfo"]

    func compile(_ source: String, architecture: String) throws -> [UInt8] {
        let options = Self.options + ["--gpu-architecture=\(architecture)"]
        let key = fnv1a(source + "\u{0}" + options.joined(separator: " ") + "\u{0}" + nvrtc.version)
        let cached = Self.cacheFolder.appendingPathComponent("\(key).cubin")
        if let data = try? Data(contentsOf: cached), !data.isEmpty { return Array(data) }

        var program: OpaquePointer?
        try nvrtc.check(nvrtc.nvrtcCreateProgram(&program, source, "distflash.cu", 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtc.nvrtcDestroyProgram(&program) }
        let cStrings = options.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let result = cStrings.map { UnsafePointer($0) }.withUnsafeBufferPointer { pointers in
            nvrtc.nvrtcCompileProgram(program, Int32(options.count), pointers.baseAddress)
        }
        var logSize = 0
        _ = nvrtc.nvrtcGetProgramLogSize(program, &logSize)
        var log = [CChar](repeating: 0, count: max(logSize, 1))
        _ = nvrtc.nvrtcGetProgramLog(program, &log)
        try nvrtc.check(result, "nvrtcCompileProgram (\(architecture))", log: String(cString: log))
        var size = 0
        try nvrtc.check(nvrtc.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var cubin = [CChar](repeating: 0, count: size)
        try nvrtc.check(nvrtc.nvrtcGetCUBIN(program, &cubin), "nvrtcGetCUBIN")
        let bytes = cubin.map { UInt8(bitPattern: $0) }
        // Best effort: a read-only or missing cache folder only costs a recompile next time.
        try? FileManager.default.createDirectory(at: Self.cacheFolder, withIntermediateDirectories: true)
        let temporary = cached.appendingPathExtension("partial-\(getpid())")
        if (try? Data(bytes).write(to: temporary)) != nil { _ = try? FileManager.default.replaceItemAt(cached, withItemAt: temporary) }
        return bytes
    }

    static var cacheFolder: URL {
        let env = ProcessInfo.processInfo.environment
        if let folder = env["DISTFLASH_KERNEL_CACHE"] { return URL(fileURLWithPath: folder) }
        if let xdg = env["XDG_CACHE_HOME"] { return URL(fileURLWithPath: xdg).appendingPathComponent("distflash") }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/distflash")
    }

    private func fnv1a(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}
