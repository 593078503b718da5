import DistFlashAttn
import Testing

@Suite("Layouts shard and unshard every sequence")
struct LayoutTests {
    static let sequences = [1, 7, 64, 101]

    @Test(arguments: Layout.Kind.allCases, 1...9)
    func roundTrip(_ kind: Layout.Kind, _ ranks: Int) throws {
        var random = SeededRandom(seed: .random(in: 0...UInt64.max))
        for s in Self.sequences {
            let layout = try Layout(kind, sequence: s, ranks: ranks)
            let tokens = random.normalTensor(shape: [2, s, 3, 5])  // [B, S, H, D]
            let lse = random.normalTensor(shape: [2, 3, s])  // [B, H, S]
            let tokenShards = try (0..<ranks).map { try layout.shard(tokens, rank: $0, axis: 1) }
            let lseShards = try (0..<ranks).map { try layout.shard(lse, rank: $0, axis: 2) }
            #expect(try layout.unshard(tokenShards, axis: 1) == tokens, "\(layout)")
            #expect(try layout.unshard(lseShards, axis: 2) == lse, "\(layout)")
        }
    }

    /// Positions partition 0..<S, increase on each rank, agree with `owner(of:)`, and balance to one token (two for
    /// zigzag, whose ranks hold two chunks).
    @Test(arguments: Layout.Kind.allCases, 1...9)
    func positionsPartitionTheSequence(_ kind: Layout.Kind, _ ranks: Int) throws {
        for s in Self.sequences {
            let layout = try Layout(kind, sequence: s, ranks: ranks)
            var seen = [Bool](repeating: false, count: s)
            var counts: [Int] = []
            for rank in 0..<ranks {
                let positions = layout.positions(rank: rank)
                #expect(positions.count == layout.count(rank: rank))
                #expect(positions == positions.sorted(), "\(layout) rank \(rank)")
                #expect(layout.positionIDs(rank: rank) == positions.map { Int32($0) })
                for (local, position) in positions.enumerated() {
                    #expect(!seen[position], "\(layout): position \(position) on two ranks")
                    seen[position] = true
                    let owner = layout.owner(of: position)
                    #expect(owner.rank == rank && owner.local == local, "\(layout) position \(position)")
                }
                counts.append(positions.count)
            }
            #expect(!seen.contains(false), "\(layout) misses a position")
            #expect(counts.max()! - counts.min()! <= (kind == .zigzag ? 2 : 1), "\(layout): counts \(counts)")
        }
    }

    @Test func smallExamples() throws {
        let zigzag = try Layout(.zigzag, sequence: 8, ranks: 2)
        #expect(zigzag.positions(rank: 0) == [0, 1, 6, 7])
        #expect(zigzag.positions(rank: 1) == [2, 3, 4, 5])
        #expect(try Layout(.striped, sequence: 7, ranks: 3).positions(rank: 1) == [1, 4])
        #expect(try Layout(.contiguous, sequence: 7, ranks: 3).positions(rank: 0) == [0, 1, 2])
        let sparse = try Layout(.contiguous, sequence: 2, ranks: 5)  // S < P: ranks 2…4 hold nothing
        #expect((0..<5).map { sparse.count(rank: $0) } == [1, 1, 0, 0, 0])
    }

    @Test func errorsNameTheValues() throws {
        #expect { try Layout(.zigzag, sequence: 0, ranks: 2) } throws: { error in
            (error as? DistFlashError)?.message.contains("sequence S = 0") == true
        }
        #expect { try Layout(.striped, sequence: 4, ranks: 0) } throws: { error in
            (error as? DistFlashError)?.message.contains("ranks P = 0") == true
        }
        let layout = try Layout(.contiguous, sequence: 6, ranks: 2)
        #expect(throws: DistFlashError.self) { try layout.unshard([Tensor(shape: [1, 3])], axis: 1) }
        #expect(throws: DistFlashError.self) { try layout.shard(Tensor(shape: [1, 5]), rank: 0, axis: 1) }
    }
}
