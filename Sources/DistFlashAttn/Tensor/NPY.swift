import Foundation

/// NumPy `.npy` files: read little-endian float32/float64 in C order, write float32.
/// Format: magic `\x93NUMPY`, version, header length, a Python-dict header padded to 64 bytes, raw data.
public enum NPY {
    private static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)

    /// Reads a `<f4` or `<f8` C-order array as float32.
    public static func read(_ url: URL) throws -> Tensor {
        let bytes: [UInt8]
        do { bytes = Array(try Data(contentsOf: url)) } catch {
            throw DistFlashError(.invalidFile, "\(url.path): cannot read (\(error.localizedDescription))")
        }
        return try decode(bytes, name: url.path)
    }

    public static func decode(_ bytes: [UInt8], name: String) throws -> Tensor {
        func fail(_ why: String) -> DistFlashError { DistFlashError(.invalidFile, "\(name): not a valid .npy file: \(why)") }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("missing the \\x93NUMPY magic") }
        let major = bytes[6]
        let headerStart: Int, headerLength: Int
        switch major {
        case 1:
            headerStart = 10
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerStart = 12
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        default: throw fail("unsupported format version \(major)")
        }
        guard headerStart + headerLength <= bytes.count,
              let header = String(bytes: bytes[headerStart..<headerStart + headerLength], encoding: .utf8)
        else { throw fail("truncated or non-text header") }

        let descr = try field("descr", in: header, name: name)
        let fortran = try field("fortran_order", in: header, name: name)
        let shapeText = try field("shape", in: header, name: name)
        let width: Int
        switch descr {
        case "'<f4'": width = 4
        case "'<f8'": width = 8
        default: throw fail("dtype \(descr) is not supported: use little-endian float32 '<f4' or float64 '<f8'")
        }
        guard fortran == "False" else { throw fail("fortran_order is \(fortran): arrays must be in C order") }
        let shape = try parseShape(shapeText, name: name)

        let count = shape.reduce(1, *)
        let dataStart = headerStart + headerLength
        guard bytes.count - dataStart == count * width else {
            throw fail("shape \(shape) needs \(count * width) bytes of data, the file has \(bytes.count - dataStart)")
        }
        var scalars = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            let data = raw.baseAddress! + dataStart
            for i in 0..<count {
                if width == 4 {
                    scalars[i] = Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                } else {
                    scalars[i] = Float(Double(bitPattern: UInt64(littleEndian: data.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                }
            }
        }
        return try Tensor(shape: shape, scalars: scalars)
    }

    /// The text of `key`'s value in the header dict.
    private static func field(_ key: String, in header: String, name: String) throws -> String {
        guard let keyRange = header.range(of: "'\(key)':") else {
            throw DistFlashError(.invalidFile, "\(name): not a valid .npy file: header has no '\(key)'")
        }
        var rest = header[keyRange.upperBound...].drop(while: { $0 == " " })
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else {
                throw DistFlashError(.invalidFile, "\(name): not a valid .npy file: unterminated shape")
            }
            return String(rest[...close])
        }
        rest = rest.prefix(while: { $0 != "," && $0 != "}" })
        return rest.trimmingCharacters(in: .whitespaces)
    }

    private static func parseShape(_ text: String, name: String) throws -> [Int] {
        let inner = text.dropFirst().dropLast()
        let parts = inner.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try parts.map {
            guard let n = Int($0), n >= 0 else {
                throw DistFlashError(.invalidFile, "\(name): not a valid .npy file: shape \(text) is malformed")
            }
            return n
        }
    }

    /// The bytes of a version-1 `<f4` file holding `tensor`.
    public static func encode(_ tensor: Tensor) -> [UInt8] {
        let dims = tensor.shape.map(String.init).joined(separator: ", ")
        let shape = tensor.shape.count == 1 ? "(\(dims),)" : "(\(dims))"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var bytes = magic + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        bytes.reserveCapacity(bytes.count + 4 * tensor.count)
        for value in tensor.scalars {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 }
        }
        return bytes
    }

    /// Writes several arrays into `directory` all or nothing: each goes to a temporary file first, and only when
    /// every one is written are they renamed into place. On failure no new file is left behind.
    public static func writeAll(_ arrays: [(name: String, tensor: Tensor)], to directory: URL) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw DistFlashError(.invalidFile, "\(directory.path): cannot create the output folder (\(error.localizedDescription))")
        }
        var temporaries: [(URL, URL)] = []
        do {
            for (name, tensor) in arrays {
                let final = directory.appendingPathComponent(name)
                let temporary = directory.appendingPathComponent(".\(name).\(UUID().uuidString).partial")
                temporaries.append((temporary, final))
                try Data(encode(tensor)).write(to: temporary)
            }
            for (temporary, final) in temporaries {
                if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
                try fm.moveItem(at: temporary, to: final)
            }
        } catch {
            for (temporary, _) in temporaries { try? fm.removeItem(at: temporary) }
            throw DistFlashError(.invalidFile, "\(directory.path): cannot write outputs (\(error.localizedDescription))")
        }
    }
}
