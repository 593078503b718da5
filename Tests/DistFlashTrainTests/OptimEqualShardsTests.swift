import DistFlashAttn
import DistFlashTrain
import Testing

@Suite struct EqualShardsTests {
    @Test("shards are equal, owned ranges tile the vector, segments tile each owned range tensor by tensor")
    func tiles() throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        for _ in 0..<200 {
            let sizes = (0..<Int.random(in: 1...12, using: &random)).map { _ in Int.random(in: 1...40, using: &random) }
            var start = 0
            let spans = sizes.map { size in
                defer { start += size }
                return start..<start + size
            }
            let ranks = Int.random(in: 1...9, using: &random)
            let shards = EqualShards(count: start, ranks: ranks)
            #expect(shards.padded % ranks == 0 && shards.padded >= start && shards.padded - start < ranks)
            var next = 0
            for rank in 0..<ranks {
                let owned = shards.owned(rank)
                #expect(owned.lowerBound == next, "rank \(rank) of \(ranks), sizes \(sizes)")
                next = owned.upperBound
                let segments = shards.segments(rank, spans: spans)
                #expect(segments.map(\.flat.count).reduce(0, +) == owned.count)
                var covered = owned.lowerBound
                for segment in segments {
                    #expect(segment.flat.lowerBound == covered)
                    covered = segment.flat.upperBound
                    #expect(spans[segment.tensor].contains(segment.flat.lowerBound))
                    #expect(segment.flat.upperBound <= spans[segment.tensor].upperBound)
                    #expect(segment.local.lowerBound == segment.flat.lowerBound - shards.shard(rank).lowerBound)
                    #expect(segment.local.count == segment.flat.count)
                }
            }
            #expect(next == start)
        }
    }

    @Test("the ranks' optimizer states over their owned ranges (some empty) gather into the full state")
    func gathers() throws {
        let shards = EqualShards(count: 5, ranks: 4)  // share 2: ranks own 0..<2, 2..<4, 4..<5, 5..<5
        #expect(shards.owned(3).isEmpty)
        let states = try (0..<4).map { rank -> AdamWState in
            let owned = shards.owned(rank)
            return try AdamWState(step: 3, shard: owned, m: owned.map(Float.init), v: owned.map { Float($0) * 2 })
        }
        let whole = try AdamWState.gathered(states)
        #expect(whole.shard == 0..<5 && whole.m == [0, 1, 2, 3, 4] && whole.v == [0, 2, 4, 6, 8] && whole.step == 3)
    }
}
