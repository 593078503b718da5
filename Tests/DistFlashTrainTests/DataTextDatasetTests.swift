import DistFlashAttn
import Foundation
import Testing
import DistFlashTrain

@Suite struct DataTextDatasetTests {
    static let text = Array("the quick brown fox jumps over the lazy dog, again and again and again.".utf8)

    @Test func windowsAreDeterministicSlicesShiftedByOne() throws {
        let data = try TextDataset(bytes: Self.text, sequenceLength: 16, seed: 42)
        #expect(data.vocabularySize == 256)
        let batch = data.batch(step: 9, size: 5)
        #expect(batch == data.batch(step: 9, size: 5))
        #expect(batch != data.batch(step: 10, size: 5))
        #expect(data.batch(step: 9, rows: 3..<5).tokens == Array(batch.tokens[48..<80]))
        let haystack = Self.text.map { Int32($0) }
        for row in 0..<5 {
            let tokens = Array(batch.tokens[row * 16..<(row + 1) * 16])
            let labels = Array(batch.labels[row * 16..<(row + 1) * 16])
            #expect(Array(tokens.dropFirst()) == Array(labels.dropLast()))
            let window = tokens + [labels.last!]
            #expect((0...haystack.count - 17).contains { Array(haystack[$0..<$0 + 17]) == window })
        }
    }

    @Test func everyWindowIsReachable() throws {
        // 20 bytes, S = 16: offsets 0…3 are the only windows and all should come up.
        let data = try TextDataset(bytes: Array(Self.text[0..<20]), sequenceLength: 16, seed: 1)
        let firsts = Set((0..<50).map { data.batch(step: $0, size: 1).tokens[0] })
        #expect(firsts == Set(Self.text[0..<4].map { Int32($0) }))
    }

    @Test func readsAFileAndRejectsMissingOrShortOnes() throws {
        try withScratchFolder { folder in
            let url = folder.appendingPathComponent("corpus.txt")
            try Data(Self.text).write(to: url)
            let data = try TextDataset(contentsOf: url, sequenceLength: 8, seed: 0)
            #expect(data.bytes == Self.text)

            #expect {
                try TextDataset(contentsOf: folder.appendingPathComponent("absent.txt"), sequenceLength: 8, seed: 0)
            } throws: { ($0 as? DistFlashError)?.code == .invalidFile && "\($0)".contains("absent.txt") }
            #expect {
                try TextDataset(contentsOf: url, sequenceLength: Self.text.count, seed: 0)
            } throws: { ($0 as? DistFlashError)?.code == .invalidFile && "\($0)".contains("\(Self.text.count + 1)") }
            // Exactly S + 1 bytes is one window.
            let tight = try TextDataset(contentsOf: url, sequenceLength: Self.text.count - 1, seed: 0)
            #expect(tight.batch(step: 3, size: 1).tokens == Self.text.dropLast().map { Int32($0) })
        }
    }
}
