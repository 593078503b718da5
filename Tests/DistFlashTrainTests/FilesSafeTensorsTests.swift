import DistFlashAttn
import Foundation
import Testing
import DistFlashTrain

/// Runs `body` with a fresh empty folder under the system's temporary folder and removes it afterwards.
func withScratchFolder<T>(_ body: (URL) throws -> T) throws -> T {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("distflash-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    return try body(folder)
}

@Suite struct FilesSafeTensorsTests {
    static func sample() throws -> SafeTensorsFile {
        var random = SeededRandom(seed: 4)
        return SafeTensorsFile(entries: [
            .init(name: "model.embed_tokens.weight", tensor: random.normalTensor(shape: [5, 3])),
            .init(name: "model.norm.weight", tensor: random.normalTensor(shape: [3]), dtype: .bf16),
            .init(name: "scalar", tensor: try Tensor(shape: [], scalars: [2.5])),
            .init(name: "empty", tensor: Tensor(shape: [0, 4])),
            .init(name: "odd \"name\"\n", tensor: random.normalTensor(shape: [1, 1, 3])),
        ], metadata: ["format": "pt", "note": "quotes \" backslash \\ tab \t ünïcode ✓", "config": "{\"a\": [1, 2]}"])
    }

    /// A file from a header text and data bytes, with the length prefix filled in.
    static func file(header: String, data: [UInt8]) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        return withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes + data
    }

    @Test func roundTripsThroughAFile() throws {
        try withScratchFolder { folder in
            let original = try Self.sample()
            let url = folder.appendingPathComponent("weights.safetensors")
            try original.write(to: url)
            let read = try SafeTensorsFile(contentsOf: url)
            var expected = original
            expected.entries[1].tensor = original.entries[1].tensor.roundedToBFloat16()
            #expect(read == expected)
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["weights.safetensors"])
        }
    }

    @Test func layoutFollowsTheFormat() throws {
        let bytes = try Self.sample().encoded()
        #expect(try Self.sample().encoded() == bytes, "same contents, same bytes")
        let headerLength = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
        #expect((8 + headerLength) % 8 == 0 && bytes[8] == UInt8(ascii: "{"))
        let header = String(decoding: bytes[8..<8 + headerLength], as: UTF8.self)
        #expect(header.hasSuffix("}") || header.hasSuffix(" "))
        let json = try JSONSerialization.jsonObject(with: Data(bytes[8..<8 + headerLength])) as! [String: Any]
        let norm = json["model.norm.weight"] as! [String: Any]
        #expect(norm["dtype"] as? String == "BF16" && norm["shape"] as? [Int] == [3])
        #expect(norm["data_offsets"] as? [Int] == [60, 66])
        #expect(bytes.count == 8 + headerLength + 60 + 6 + 4 + 0 + 12)
        // F32 little-endian: 2.5 = 0x40200000.
        #expect(Array(bytes[8 + headerLength + 66..<8 + headerLength + 70]) == [0x00, 0x00, 0x20, 0x40])
    }

    /// A header field for tensor `name`.
    static func field(_ name: String, _ dtype: String, _ shape: [Int], _ offsets: [Int]) -> String {
        #""\#(name)":{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":\#(offsets)}"#
    }

    static func zeros(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }

    static let malformed: [(String, [UInt8], String)] = [
        ("short", [1, 2, 3], "shorter than the 8-byte header length"),
        ("length past the end", [200] + file(header: "{}", data: []).dropFirst(), "header length 200"),
        ("not JSON", file(header: "{not json", data: []), "not a JSON object"),
        ("unsupported dtype", file(header: "{\(field("x", "F16", [2], [0, 4]))}", data: zeros(4)),
         "x.dtype F16 is not supported"),
        ("size mismatch", file(header: "{\(field("x", "F32", [2], [0, 4]))}", data: zeros(4)),
         "x.data_offsets [0, 4] span 4 bytes"),
        ("negative shape", file(header: "{\(field("x", "F32", [-1], [0, 4]))}", data: zeros(4)),
         "x.shape is not a list"),
        ("offsets past the data", file(header: "{\(field("x", "F32", [2], [0, 8]))}", data: zeros(4)),
         "run past the 4-byte data section"),
        ("overlap", file(header: "{\(field("x", "F32", [2], [0, 8])),\(field("y", "F32", [1], [4, 8]))}",
                         data: zeros(8)),
         "y.data_offsets [4, 8] overlaps"),
        ("gap", file(header: "{\(field("x", "F32", [1], [4, 8]))}", data: zeros(8)), "leaves a gap after byte 0"),
        ("trailing bytes", file(header: "{\(field("x", "F32", [1], [0, 4]))}", data: zeros(6)),
         "cover 4 bytes of data, the file has 6"),
        ("metadata not strings", file(header: #"{"__metadata__":{"step":3}}"#, data: []),
         "__metadata__.step is not a string"),
        ("entry not an object", file(header: #"{"x":[1,2]}"#, data: []), "x is not an object"),
    ]

    @Test(arguments: malformed)
    func malformedFilesAreRejectedNamingTheField(label: String, bytes: [UInt8], expected: String) {
        #expect {
            try SafeTensorsFile(bytes: bytes, name: "bad.safetensors")
        } throws: { error in
            guard let error = error as? DistFlashError else { return false }
            print("\(label): \(error)")
            return error.code == .invalidFile && error.message.hasPrefix("bad.safetensors: ")
                && error.message.contains(expected)
        }
    }

    @Test func aFailedWriteLeavesTheOldFileAndNoLeftovers() throws {
        try withScratchFolder { folder in
            let url = folder.appendingPathComponent("model.safetensors")
            let first = SafeTensorsFile(entries: [.init(name: "a", tensor: Tensor(shape: [2], repeating: 1))])
            try first.write(to: url)
            let duplicate = SafeTensorsFile(entries: [.init(name: "a", tensor: Tensor(shape: [1])),
                                                      .init(name: "a", tensor: Tensor(shape: [1]))])
            #expect(throws: DistFlashError.self) { try duplicate.write(to: url) }
            #expect(try SafeTensorsFile(contentsOf: url) == first)
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["model.safetensors"])
            // A folder that cannot be created (its parent is a file) is an invalidFile error naming the path.
            let blocked = url.appendingPathComponent("inside.safetensors")
            #expect { try first.write(to: blocked) } throws: {
                ($0 as? DistFlashError)?.code == .invalidFile && "\($0)".contains(blocked.path)
            }
        }
    }

    @Test func missingFileNamesThePath() {
        #expect { try SafeTensorsFile(contentsOf: URL(fileURLWithPath: "/nonexistent/w.safetensors")) } throws: {
            ($0 as? DistFlashError)?.code == .invalidFile && "\($0)".contains("/nonexistent/w.safetensors")
        }
    }
}
