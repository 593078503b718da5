import Foundation

extension Plan {
    /// A compact step × rank text table: each step has a line of the blocks each rank computes and a line of what
    /// it sends. Notation:
    /// ```
    /// q3·kv1        rank computes query shard 3 against key shard 1 (all rows; heads omitted)
    /// q3[0:64]·kv1  only local rows 0..<64 of shard 3 (a split block)
    /// kv1→3         sends shard 1's K/V to rank 3; q = Q, qo = Q/O/dO/LSE, o = partial (O, LSE),
    ///               dq = dQ partial, dkv = dK/dV partial
    /// 5 blocks      more than two items in one cell
    /// ```
    public func stepTable() -> String {
        let header = ["step"] + (0..<ranks).map { "rank \($0)" }
        var rows: [[String]] = []
        for (t, step) in steps.enumerated() {
            var tasks = [[String]](repeating: [], count: ranks), sends = [[String]](repeating: [], count: ranks)
            for task in step.tasks {
                let whole = task.rows == 0..<layout.count(rank: task.queryShard)
                let rows = whole ? "" : "[\(task.rows.lowerBound):\(task.rows.upperBound)]"
                tasks[task.rank].append("q\(task.queryShard)\(rows)·kv\(task.keyShard)")
            }
            for transfer in step.transfers {
                sends[transfer.from].append("\(Self.code(transfer.content))\(transfer.shard)→\(transfer.to)")
            }
            rows.append(["\(t)"] + tasks.map { Self.cell($0, noun: "blocks", empty: "·") })
            if step.transfers.count > 0 { rows.append([""] + sends.map { Self.cell($0, noun: "sends", empty: "") }) }
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
                .joined(separator: " | ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "-+-")]
            + rows.map(line)).joined(separator: "\n")
    }

    static func code(_ content: Transfer.Content) -> String {
        switch content {
        case .keyValue: return "kv"
        case .query: return "q"
        case .backwardInputs: return "qo"
        case .partialOutput: return "o"
        case .queryGradient: return "dq"
        case .keyValueGradient: return "dkv"
        }
    }

    static func cell(_ items: [String], noun: String, empty: String) -> String {
        if items.isEmpty { return empty }
        return items.count > 2 ? "\(items.count) \(noun)" : items.joined(separator: " ")
    }
}
