import DistFlashAttn
import Foundation

extension SafeTensorsFile {
    /// The largest header accepted (the limit of the reference implementation), so a corrupt length cannot make us
    /// parse gigabytes.
    static let maximumHeaderLength = 100_000_000

    /// Reads and validates `url`. Throws `invalidFile` naming the path, and the field and the rule for a malformed
    /// file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url, options: .mappedIfSafe) } catch {
            throw DistFlashError(.invalidFile, "\(url.path): cannot read the safetensors file "
                + "(\(error.localizedDescription)); check the path")
        }
        self = try data.withUnsafeBytes { try Self.decode($0, name: url.path) }
    }

    /// Decodes and validates a whole file held in `bytes`; `name` appears in errors.
    public init(bytes: [UInt8], name: String) throws {
        self = try bytes.withUnsafeBytes { try Self.decode($0, name: name) }
    }

    /// Checks, in order: the length prefix fits and is at most `maximumHeaderLength`; the header is a UTF-8 JSON
    /// object; `__metadata__`, if present, maps strings to strings; every entry has a supported `dtype`, a `shape`
    /// of non-negative integers and `data_offsets` [begin, end] with end − begin = elements × width; sorted by
    /// begin, the entries start at 0, follow each other with no gap or overlap, and end exactly at the end of the
    /// file.
    private static func decode(_ bytes: UnsafeRawBufferPointer, name: String) throws -> SafeTensorsFile {
        func fail(_ why: String) -> DistFlashError {
            DistFlashError(.invalidFile, "\(name): not a valid safetensors file: \(why)")
        }
        guard bytes.count >= 8 else { throw fail("\(bytes.count) bytes is shorter than the 8-byte header length") }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(min(maximumHeaderLength, bytes.count - 8)) else {
            throw fail("header length \(declared) exceeds the \(bytes.count - 8) bytes after it "
                + "(or the \(maximumHeaderLength)-byte limit)")
        }
        let headerLength = Int(declared)
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<8 + headerLength])
        guard headerBytes.first == UInt8(ascii: "{"),
              let json = try? JSONSerialization.jsonObject(with: Data(headerBytes)),
              let header = json as? [String: Any]
        else { throw fail("the \(headerLength)-byte header is not a JSON object") }

        var metadata: [String: String] = [:]
        if let raw = header["__metadata__"] {
            guard let map = raw as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (key, value) in map {
                guard let text = value as? String else { throw fail("__metadata__.\(key) is not a string") }
                metadata[key] = text
            }
        }

        let dataStart = 8 + headerLength
        let dataSize = bytes.count - dataStart
        var located: [(entry: Entry, begin: Int, end: Int)] = []
        for (tensorName, raw) in header where tensorName != "__metadata__" {
            guard let fields = raw as? [String: Any] else { throw fail("\(tensorName) is not an object") }
            guard let dtypeText = fields["dtype"] as? String else { throw fail("\(tensorName).dtype is missing") }
            guard let dtype = DType(rawValue: dtypeText) else {
                throw fail("\(tensorName).dtype \(dtypeText) is not supported: use F32 or BF16")
            }
            guard let shape = nonNegativeIntegers(fields["shape"]) else {
                throw fail("\(tensorName).shape is not a list of non-negative integers")
            }
            guard let offsets = nonNegativeIntegers(fields["data_offsets"]), offsets.count == 2,
                  offsets[0] <= offsets[1]
            else { throw fail("\(tensorName).data_offsets is not [begin, end] with 0 ≤ begin ≤ end") }
            var count = 1
            for dimension in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw fail("\(tensorName).shape \(shape) has too many elements") }
                count = product
            }
            let (size, overflow) = count.multipliedReportingOverflow(by: dtype.width)
            guard !overflow, offsets[1] - offsets[0] == size else {
                throw fail("\(tensorName).data_offsets \(offsets) span \(offsets[1] - offsets[0]) bytes, but "
                    + "\(dtypeText) shape \(shape) needs \(count) × \(dtype.width) bytes")
            }
            guard offsets[1] <= dataSize else {
                throw fail("\(tensorName).data_offsets \(offsets) run past the \(dataSize)-byte data section")
            }
            let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart + offsets[0]..<dataStart + offsets[1]])
            let scalars = (0..<count).map { i -> Float in
                switch dtype {
                case .f32:
                    Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case .bf16:
                    BFloat16.value(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            }
            let entry = Entry(name: tensorName, tensor: try Tensor(shape: shape, scalars: scalars), dtype: dtype)
            located.append((entry, offsets[0], offsets[1]))
        }

        located.sort { ($0.begin, $0.end, $0.entry.name) < ($1.begin, $1.end, $1.entry.name) }
        var covered = 0
        for item in located {
            guard item.begin == covered else {
                let problem = item.begin < covered
                    ? "overlaps the tensor before it" : "leaves a gap after byte \(covered)"
                throw fail("\(item.entry.name).data_offsets [\(item.begin), \(item.end)] \(problem)")
            }
            covered = item.end
        }
        guard covered == dataSize else {
            throw fail("the tensors cover \(covered) bytes of data, the file has \(dataSize) after the header")
        }
        return SafeTensorsFile(entries: located.map(\.entry), metadata: metadata)
    }

    /// `value` as `[Int]` if it is a JSON list of non-negative integers.
    private static func nonNegativeIntegers(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var integers: [Int] = []
        for item in list {
            guard let integer = item as? Int, integer >= 0 else { return nil }
            integers.append(integer)
        }
        return integers
    }
}
