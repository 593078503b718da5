import DistFlashAttn
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file all or nothing: the contents go to a hidden temporary file `.<name>.<UUID>.partial` in the same
/// folder, are flushed to disk, and only then renamed over the destination (rename(2) replaces it atomically, which
/// holds only within one file system, hence the same folder). On any error the temporary file is removed and the
/// destination keeps its old contents; if the process is killed mid-write only the hidden `.partial` file can
/// remain, never a half-written destination.
enum AtomicFile {
    /// Creates the folder if needed, then calls `body` with a handle on the temporary file. `what` names the file's
    /// role in errors ("checkpoint", "curve chart"). Errors that `body` throws as `DistFlashError` pass through;
    /// others become `invalidFile` naming the path.
    static func write(to url: URL, what: String, _ body: (FileHandle) throws -> Void) throws {
        let fm = FileManager.default
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).partial")
        func fail(_ why: String) -> DistFlashError {
            DistFlashError(.invalidFile, "\(url.path): cannot write the \(what) (\(why)); check that the folder is "
                + "writable and the disk has room")
        }
        do {
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw fail("cannot create the folder: \(error.localizedDescription)")
        }
        guard fm.createFile(atPath: temporary.path, contents: nil) else {
            throw fail("cannot create a temporary file in \(folder.path)")
        }
        do {
            let handle = try FileHandle(forWritingTo: temporary)
            do {
                try body(handle)
                try handle.synchronize()
                try handle.close()
            } catch {
                try? handle.close()
                throw error
            }
            guard rename(temporary.path, url.path) == 0 else {
                throw fail("cannot rename the temporary file into place: \(String(cString: strerror(errno)))")
            }
        } catch let error as DistFlashError {
            try? fm.removeItem(at: temporary)
            throw error
        } catch {
            try? fm.removeItem(at: temporary)
            throw fail(error.localizedDescription)
        }
    }
}
