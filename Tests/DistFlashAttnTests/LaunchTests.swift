import DistFlashAttn
import Foundation
import Testing

@Suite struct LaunchEnvironmentTests {
    @Test func readsEachLauncher() throws {
        let torch = try LaunchEnvironment.detect(["RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                                  "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"])
        #expect(torch == LaunchEnvironment(rank: 2, worldSize: 4, localRank: 1, masterAddress: "10.0.0.1",
                                           masterPort: 1234, launcher: "torchrun"))
        let mpi = try LaunchEnvironment.detect(["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
                                                "OMPI_COMM_WORLD_LOCAL_RANK": "0", "MASTER_ADDR": "h"])
        #expect(mpi?.launcher == "Open MPI" && mpi?.masterPort == 29500 && mpi?.worldSize == 2)
        let slurm = try LaunchEnvironment.detect(["SLURM_PROCID": "3", "SLURM_NTASKS": "8", "MASTER_ADDR": "h"])
        #expect(slurm?.rank == 3 && slurm?.localRank == 3 && slurm?.launcher == "Slurm")
        #expect(try LaunchEnvironment.detect(["PATH": "/bin"]) == nil)
        // One process (srun -n1, mpirun -np 1) is no multi-process run: no rendezvous address needed.
        #expect(try LaunchEnvironment.detect(["SLURM_PROCID": "0", "SLURM_NTASKS": "1"]) == nil)
        // torchrun's agent holds MASTER_PORT; an explicit port wins over both.
        let agent = try LaunchEnvironment.detect(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h",
                                                  "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "none"])
        #expect(agent?.masterPort == 1235)
        let explicit = try LaunchEnvironment.detect(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h",
                                                     "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "none",
                                                     "DISTFLASH_RENDEZVOUS_PORT": "4000"])
        #expect(explicit?.masterPort == 4000)
    }

    @Test func badVariablesAreNamed() {
        func message(_ environment: [String: String]) -> String {
            do { _ = try LaunchEnvironment.detect(environment); return "no error" } catch { return "\(error)" }
        }
        #expect(message(["RANK": "0", "MASTER_ADDR": "h"]).contains("WORLD_SIZE is not set"))
        #expect(message(["RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "h"]).contains("RANK = 4"))
        #expect(message(["RANK": "x", "WORLD_SIZE": "4", "MASTER_ADDR": "h"]).contains("RANK = \"x\""))
        #expect(message(["RANK": "0", "WORLD_SIZE": "2"]).contains("MASTER_ADDR is not set"))
        #expect(message(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"])
            .contains("rendezvous port 70000"))
    }
}

@Suite struct RendezvousTests {
    /// Rank 0 on a free port; ranks 1…3 fetch the blob, some of them before rank 0 listens.
    @Test func everyRankGetsTheBlob() throws {
        let blob = (0..<128).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        let port = Mailbox<Int>(), results = Mailbox<[UInt8]>()
        let served = Mailbox<String>()
        Thread.detachNewThread {
            do {
                try Rendezvous.serve(blob, port: 0, worldSize: 4, timeout: 20) { port.put($0) }
                served.put("ok")
            } catch { served.put("\(error)") }
        }
        let actual = try #require(port.take())
        for rank in 1...3 {
            Thread.detachNewThread {
                results.put((try? Rendezvous.fetch(host: "127.0.0.1", port: actual, rank: rank, timeout: 20)) ?? [])
            }
        }
        for _ in 1...3 { #expect(results.take() == blob) }
        #expect(served.take() == "ok")
    }

    @Test func aMissingRankIsNamedWithinTheTimeout() throws {
        let start = Date()
        #expect {
            try Rendezvous.serve([1, 2, 3], port: 0, worldSize: 3, timeout: 0.5)
        } throws: { "\($0)".contains("ranks [1, 2] did not connect within 0.5 s") }
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test func noRankZeroFailsWithinTheTimeout() throws {
        // A port nothing listens on: take a free one and close it.
        let port = Mailbox<Int>()
        Thread.detachNewThread { try? Rendezvous.serve([], port: 0, worldSize: 1, timeout: 1) { port.put($0) } }
        let unused = try #require(port.take())
        Thread.sleep(forTimeInterval: 0.1)
        let start = Date()
        #expect {
            _ = try Rendezvous.fetch(host: "127.0.0.1", port: unused, rank: 1, timeout: 0.5)
        } throws: { "\($0)".contains("could not reach rank 0 at 127.0.0.1:\(unused)") }
        #expect(Date().timeIntervalSince(start) < 5)
    }
}

/// One value handed between threads.
private final class Mailbox<Value: Sendable>: @unchecked Sendable {
    // Invariant: `values` is touched only while holding `condition`.
    private let condition = NSCondition()
    private var values: [Value] = []

    func put(_ value: Value) {
        condition.lock()
        values.append(value)
        condition.signal()
        condition.unlock()
    }

    /// The next value, or nil after 30 s.
    func take() -> Value? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(30)
        while values.isEmpty { if !condition.wait(until: deadline) { return nil } }
        return values.removeFirst()
    }
}
