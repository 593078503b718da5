#if canImport(Glibc)
import Glibc
#endif
import DistFlashAttn

/// A shared library opened at run time. Nothing of CUDA is needed to build: the GPU path finds the driver,
/// NVRTC and (later) NCCL/cuBLAS when it first runs, and a machine without them keeps the CPU path.
final class DynamicLibrary: @unchecked Sendable {
    // Invariant: the handle is immutable and dlsym is thread-safe.
    let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first of `candidates` that loads; `environment` (if set) names the only path to try.
    init(_ what: String, candidates: [String], environment: String) throws {
        let override = getenv(environment).map { String(cString: $0) }
        var tried: [String] = []
        for path in override.map({ [$0] }) ?? candidates {
            if let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) {
                self.path = path
                self.handle = handle
                return
            }
            tried.append("\(path): \(dlerror().map { String(cString: $0) } ?? "not found")")
        }
        throw DistFlashError(.runtime, "cannot load \(what) (tried \(tried.joined(separator: "; "))). "
            + "Install the NVIDIA driver / CUDA toolkit or set \(environment) to the library's path.")
    }

    /// The function `name`, typed as `T` (a `@convention(c)` function type).
    func symbol<T>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let pointer = dlsym(handle, name) else {
            throw DistFlashError(.runtime, "\(path) has no symbol \(name): the library is too old or not \(name)'s")
        }
        return unsafeBitCast(pointer, to: T.self)
    }
}
