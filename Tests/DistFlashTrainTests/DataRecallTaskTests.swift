import DistFlashAttn
import Testing
import DistFlashTrain

@Suite struct DataRecallTaskTests {
    static let configurations: [(s: Int, pairs: Int, queries: Int, distance: Int)] = [
        (64, 4, 4, 16), (97, 6, 3, 40), (256, 16, 8, 128), (27, 5, 3, 11),  // the last one exactly fits
    ]

    @Test func batchIsAPureFunctionOfSeedAndStep() throws {
        let task = try RecallTask(sequenceLength: 128, pairs: 8, queries: 4, minimumDistance: 48, seed: 7)
        #expect(task.batch(step: 3, size: 4) == task.batch(step: 3, size: 4))
        #expect(task.batch(step: 3, size: 4) != task.batch(step: 4, size: 4))
        let otherSeed = try RecallTask(sequenceLength: 128, pairs: 8, queries: 4, minimumDistance: 48, seed: 8)
        #expect(task.batch(step: 3, size: 4) != otherSeed.batch(step: 3, size: 4))
        // Rows do not depend on the batch size, so data-parallel ranks can build their own.
        let whole = task.batch(step: 5, size: 6), part = task.batch(step: 5, rows: 2..<5)
        #expect(part.tokens == Array(whole.tokens[2 * 128..<5 * 128]))
        #expect(part.labels == Array(whole.labels[2 * 128..<5 * 128]))
    }

    @Test(arguments: configurations)
    func everyAnswerAppearsEarlierAtTheMinimumDistance(s: Int, pairs: Int, queries: Int, distance: Int) throws {
        let task = try RecallTask(sequenceLength: s, pairs: pairs, queries: queries, minimumDistance: distance,
                                  keyCount: 2 * pairs, valueCount: 8, fillerCount: 3, seed: 11)
        let keys = Set((0..<task.keyCount).map(task.key)), values = Set((0..<task.valueCount).map(task.value))
        for step in 0..<20 {
            let batch = task.batch(step: step, size: 3)
            for row in 0..<3 {
                let tokens = Array(batch.tokens[row * s..<(row + 1) * s])
                let labels = Array(batch.labels[row * s..<(row + 1) * s])
                #expect(tokens[0] == RecallTask.beginToken)
                #expect(tokens.allSatisfy { (0..<Int32(task.vocabularySize)).contains($0) })
                let context = tokens[0..<task.firstQueryPosition]
                #expect(context.filter(keys.contains).count == pairs)
                #expect(Set(context.filter(keys.contains)).count == pairs, "keys of a row are distinct")

                let labelled = labels.indices.filter { labels[$0] >= 0 }
                #expect(labelled == (0..<queries).map { task.firstQueryPosition + 2 * $0 }, "labels only on answers")
                #expect(Set(labelled.map { tokens[$0] }).count == queries, "queried pairs are distinct")
                for q in labelled {
                    #expect(keys.contains(tokens[q]) && values.contains(labels[q]) && tokens[q + 1] == labels[q])
                    let stored = context.indices.filter { context[$0] == tokens[q] }
                    #expect(stored.count == 1)
                    guard let p = stored.first else { continue }
                    #expect(tokens[p + 1] == labels[q], "the stored value is the answer")
                    #expect(q - (p + 1) >= distance)
                }
            }
        }
    }

    @Test func tightestLayoutPutsTheLastPairAtTheMinimumDistance() throws {
        let task = try RecallTask(sequenceLength: 2 * 3 + 10 + 2 * 3, pairs: 3, queries: 3, minimumDistance: 10,
                                  seed: 1)
        let batch = task.batch(step: 0, size: 1)
        // Pairs fill positions 1…6, so the first query (position 16) is 10 after the value at position 6.
        #expect(task.firstQueryPosition == 16)
        #expect((1...6).allSatisfy { batch.tokens[$0] >= task.key(0) })
        #expect((7..<16).allSatisfy { batch.tokens[$0] < task.key(0) && batch.tokens[$0] >= task.filler(0) })
    }

    @Test func accuracyCountsOnlyAnswers() throws {
        let task = try RecallTask(sequenceLength: 64, pairs: 4, queries: 4, minimumDistance: 16, seed: 3)
        let batch = task.batch(step: 0, size: 2)
        let oracle = zip(batch.tokens, batch.labels).map { $1 >= 0 ? $1 : $0 }
        #expect(try task.accuracy(predictions: oracle, batch: batch) == 1)
        let wrong = batch.labels.map { $0 >= 0 ? task.key(0) : $0 }
        #expect(try task.accuracy(predictions: wrong, batch: batch) == 0)
        var half = oracle
        for (i, label) in batch.labels.enumerated() where label >= 0 && i % 4 == 0 { half[i] = -5 }
        #expect(try task.accuracy(predictions: half, batch: batch) == 0.5)
        #expect(throws: DistFlashError.self) { try task.accuracy(predictions: [1, 2], batch: batch) }
    }

    /// The look-back rule as a predictor: copy the token after the latest earlier copy of the current key within
    /// `reach` positions, else answer value 0. A full-context reach solves every query; a reach of
    /// `minimumDistance` finds nothing and falls to guessing.
    @Test func lookBackSolvesWithFullReachAndGuessesWithShortReach() throws {
        let task = try RecallTask(sequenceLength: 200, pairs: 10, queries: 6, minimumDistance: 80, valueCount: 16,
                                  seed: 5)
        let batch = task.batch(step: 2, size: 8)
        func predictions(reach: Int) -> [Int32] {
            var out = [Int32](repeating: task.value(0), count: batch.tokens.count)
            for i in batch.tokens.indices where batch.labels[i] >= 0 {
                let rowStart = i / task.sequenceLength * task.sequenceLength
                let earliest = max(rowStart, i - reach + 1)
                if let p = (earliest..<i).last(where: { batch.tokens[$0] == batch.tokens[i] }) {
                    out[i] = batch.tokens[p + 1]
                }
            }
            return out
        }
        #expect(try task.accuracy(predictions: predictions(reach: task.sequenceLength), batch: batch) == 1)
        let short = try task.accuracy(predictions: predictions(reach: task.minimumDistance), batch: batch)
        let guessed = Double(batch.labels.filter { $0 == task.value(0) }.count) / Double(batch.labeledCount)
        #expect(short == guessed)
        #expect(task.chanceAccuracy == 1.0 / 16)
    }

    @Test func invalidSettingsNameTheValueAndTheRule() {
        #expect {
            try RecallTask(sequenceLength: 40, pairs: 8, queries: 4, minimumDistance: 20, seed: 0)
        } throws: { error in
            let e = error as? DistFlashError
            return e?.code == .invalidProblem && e!.message.contains("sequence length = 40")
                && e!.message.contains("= 44")
        }
        #expect(throws: DistFlashError.self) {
            try RecallTask(sequenceLength: 100, pairs: 2, queries: 3, minimumDistance: 5, seed: 0)
        }
        #expect(throws: DistFlashError.self) {
            try RecallTask(sequenceLength: 100, pairs: 8, queries: 2, minimumDistance: 5, keyCount: 4, seed: 0)
        }
    }
}
