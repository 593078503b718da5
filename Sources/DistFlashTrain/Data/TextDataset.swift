import DistFlashAttn
import Foundation

/// A plain text file as byte-level tokens (vocabulary 256, token = byte value): each row is a window of S + 1
/// consecutive bytes at a random offset, tokens the first S and labels the last S (every position labelled):
/// ```
///  bytes   … b_o  b_o+1  …  b_o+S−1  b_o+S …
///  tokens      b_o  b_o+1  …  b_o+S−1
///  labels      b_o+1 …        b_o+S
/// ```
/// The offset of row b at step t is a pure function of (seed, t, b); offsets are uniform over every window that
/// fits, so windows overlap and the file is sampled with replacement.
public struct TextDataset: BatchSource {
    /// The file's bytes.
    public let bytes: [UInt8]
    /// S.
    public let sequenceLength: Int
    public let seed: UInt64

    public var vocabularySize: Int { 256 }

    /// Reads `url` whole. Throws `invalidFile` naming the path if it cannot be read or holds fewer than S + 1 bytes,
    /// `invalidProblem` if S < 1.
    public init(contentsOf url: URL, sequenceLength: Int, seed: UInt64) throws {
        let data: Data
        do { data = try Data(contentsOf: url, options: .mappedIfSafe) } catch {
            throw DistFlashError(.invalidFile, "\(url.path): cannot read the text file "
                + "(\(error.localizedDescription)); check the path")
        }
        try self.init(bytes: Array(data), sequenceLength: sequenceLength, seed: seed, name: url.path)
    }

    /// Text already in memory; `name` appears in errors.
    public init(bytes: [UInt8], sequenceLength: Int, seed: UInt64, name: String = "text") throws {
        guard sequenceLength >= 1 else {
            throw DistFlashError(.invalidProblem, "text data: sequence length = \(sequenceLength): must be ≥ 1")
        }
        guard bytes.count > sequenceLength else {
            throw DistFlashError(.invalidFile, "\(name): \(bytes.count) bytes is too short for sequence length "
                + "\(sequenceLength): a window needs S + 1 = \(sequenceLength + 1) bytes; use a longer text or a "
                + "shorter sequence")
        }
        (self.bytes, self.sequenceLength, self.seed) = (bytes, sequenceLength, seed)
    }

    /// Rows `rows` of step `step`: tokens and labels `[rows.count, S]`.
    public func batch(step: Int, rows: Range<Int>) -> TokenBatch {
        let windows = bytes.count - sequenceLength
        var tokens: [Int32] = [], labels: [Int32] = []
        tokens.reserveCapacity(rows.count * sequenceLength)
        labels.reserveCapacity(rows.count * sequenceLength)
        for row in rows {
            var random = RowRandom(seed: seed, step: step, row: row)
            let offset = random.below(windows)
            tokens += bytes[offset..<offset + sequenceLength].map { Int32($0) }
            labels += bytes[offset + 1...offset + sequenceLength].map { Int32($0) }
        }
        return TokenBatch(batch: rows.count, sequence: sequenceLength, tokens: tokens, labels: labels)
    }
}
