import DistFlashAttn
import Foundation

/// Named tensors and a string→string metadata map in the safetensors format (as Hugging Face and PyTorch read it):
/// ```
///  [ N: u64 little-endian ][ header: N bytes of JSON, padded with spaces so 8 + N is a multiple of 8 ][ data ]
///  header = {"__metadata__": {"key": "value", …},
///            "<name>": {"dtype": "F32", "shape": [d0, d1, …], "data_offsets": [begin, end]}, …}
/// ```
/// Offsets are relative to the start of the data section; tensors are little-endian, row-major, packed back to back
/// with no gaps or overlaps, and together cover the data section exactly. Dtypes here: F32 and BF16 (both read
/// and written; master weights and optimizer moments are written F32 so a resume is exact).
public struct SafeTensorsFile: Sendable, Equatable {
    public enum DType: String, Sendable, CaseIterable {
        case f32 = "F32"
        case bf16 = "BF16"

        /// Bytes per element.
        public var width: Int { self == .f32 ? 4 : 2 }
    }

    /// One tensor. A BF16 entry's values are rounded to bfloat16 when written.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var tensor: Tensor

        public init(name: String, tensor: Tensor, dtype: DType = .f32) {
            (self.name, self.tensor, self.dtype) = (name, tensor, dtype)
        }
    }

    /// Tensors in data order (the order written; on read, the order of their offsets).
    public var entries: [Entry]
    public var metadata: [String: String]

    public init(entries: [Entry], metadata: [String: String] = [:]) {
        (self.entries, self.metadata) = (entries, metadata)
    }

    /// The entry named `name`, if any.
    public subscript(name: String) -> Entry? { entries.first { $0.name == name } }

    /// Writes the file all or nothing (see `AtomicFile`): a failure or a kill mid-write never leaves a
    /// half-written file at `url`. Throws `invalidProblem` for bad names, `invalidFile` naming the path for I/O.
    public func write(to url: URL) throws {
        let header = try headerBytes()
        try AtomicFile.write(to: url, what: "safetensors file") { handle in
            try serialize(header: header) { try handle.write(contentsOf: Data($0)) }
        }
    }

    /// The file's bytes.
    public func encoded() throws -> [UInt8] {
        var bytes: [UInt8] = []
        try serialize(header: try headerBytes()) { bytes += $0 }
        return bytes
    }

    /// Header length, header, then each tensor's bytes, handed to `sink` a chunk at a time so a large file is
    /// never built whole in memory.
    private func serialize(header: [UInt8], into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try withUnsafeBytes(of: UInt64(header.count).littleEndian) { try sink($0) }
        try header.withUnsafeBytes { try sink($0) }
        let chunk = 1 << 16
        for entry in entries {
            let scalars = entry.tensor.scalars
            for start in stride(from: 0, to: scalars.count, by: chunk) {
                let end = min(start + chunk, scalars.count)
                var bytes = [UInt8](repeating: 0, count: (end - start) * entry.dtype.width)
                bytes.withUnsafeMutableBytes { out in
                    for i in start..<end {
                        let at = (i - start) * entry.dtype.width
                        switch entry.dtype {
                        case .f32:
                            out.storeBytes(of: scalars[i].bitPattern.littleEndian, toByteOffset: at, as: UInt32.self)
                        case .bf16:
                            out.storeBytes(of: BFloat16.bits(scalars[i]).littleEndian, toByteOffset: at, as: UInt16.self)
                        }
                    }
                }
                try bytes.withUnsafeBytes { try sink($0) }
            }
        }
    }

    /// The JSON header padded with spaces so the data starts 8-byte aligned. Metadata keys are sorted so the same
    /// contents always give the same bytes. Throws `invalidProblem` naming the entry for an empty, duplicate or
    /// reserved (`__metadata__`) name.
    private func headerBytes() throws -> [UInt8] {
        var seen = Set<String>()
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for (i, entry) in entries.enumerated() {
            guard !entry.name.isEmpty, entry.name != "__metadata__" else {
                throw DistFlashError(.invalidProblem, "safetensors entry \(i): the name \"\(entry.name)\" is "
                    + "reserved or empty; give the tensor a real name")
            }
            guard seen.insert(entry.name).inserted else {
                throw DistFlashError(.invalidProblem, "safetensors entry \(i): the name \(entry.name) appears twice; "
                    + "tensor names must be unique")
            }
            let end = offset + entry.tensor.count * entry.dtype.width
            let shape = entry.tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],"
                + "\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array("{\(fields.joined(separator: ","))}".utf8)
        header += [UInt8](repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)
        return header
    }

    /// `text` as a JSON string literal.
    private func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
