import DistFlashAttn
import Foundation
import Testing

@Suite(".npy files")
struct NPYTests {
    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("npy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A file with a hand-written header, so malformed variants are easy to make.
    static func file(descr: String = "'<f4'", fortran: String = "False", shape: String = "(2, 3)",
              dataBytes: Int = 24, magic: [UInt8] = [0x93] + Array("NUMPY".utf8)) -> [UInt8] {
        var header = "{'descr': \(descr), 'fortran_order': \(fortran), 'shape': \(shape), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        return magic + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)] + Array(header.utf8)
            + [UInt8](repeating: 0, count: dataBytes)
    }

    @Test(arguments: [[7], [2, 3], [1, 5, 3, 2], [0, 4]])
    func roundTrip(_ shape: [Int]) throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        let tensor = random.normalTensor(shape: shape)
        let bytes = NPY.encode(tensor)
        #expect(bytes.count % 64 == (4 * tensor.count) % 64)  // header padded to 64 bytes
        #expect(try NPY.decode(bytes, name: "x") == tensor)
    }

    @Test func readsFloat64() throws {
        var bytes = Self.file(descr: "'<f8'", shape: "(3,)", dataBytes: 0)
        for value in [1.5, -2.25, 1e-3] { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 } }
        let tensor = try NPY.decode(bytes, name: "x")
        #expect(tensor.shape == [3])
        #expect(tensor.scalars == [1.5, -2.25, Float(1e-3)])
    }

    @Test(arguments: [
        ("magic", file(magic: Array("NOTNPY".utf8))),
        ("dtype '<i4'", file(descr: "'<i4'")),
        ("dtype '>f4'", file(descr: "'>f4'")),
        ("fortran_order is True", file(fortran: "True")),
        ("needs 24 bytes of data, the file has 20", file(dataBytes: 20)),
        ("needs 24 bytes of data, the file has 28", file(dataBytes: 28)),
        ("shape (2, x) is malformed", file(shape: "(2, x)")),
        ("missing the", [0x93, 0x4E]),
    ])
    func malformedFilesAreRejected(_ fragment: String, _ bytes: [UInt8]) {
        do {
            _ = try NPY.decode(bytes, name: "bad.npy")
            Issue.record("accepted a file that should fail with '\(fragment)'")
        } catch let error as DistFlashError {
            #expect(error.code == .invalidFile)
            #expect(error.message.contains("bad.npy") && error.message.contains(fragment), "message: \(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func writeAllIsAllOrNothing() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let t = Tensor(shape: [2], repeating: 1)
        try NPY.writeAll([("a.npy", t), ("b.npy", t)], to: folder)
        #expect(try NPY.read(folder.appendingPathComponent("b.npy")) == t)
        // The second array cannot be written (its folder does not exist): the first must not appear either.
        #expect(throws: DistFlashError.self) {
            try NPY.writeAll([("c.npy", t), ("missing/d.npy", t)], to: folder)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        #expect(names == ["a.npy", "b.npy"])
    }
}
