/// Where this process sits in a multi-process run, read from whichever launcher started it:
/// torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`), Open MPI (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
/// `OMPI_COMM_WORLD_LOCAL_RANK`) or Slurm (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`), plus the
/// rendezvous address `MASTER_ADDR:MASTER_PORT` where rank 0 serves the communicator's id.
///
/// torchrun's own agent already listens on MASTER_PORT (its key-value store), so under torchrun (which sets
/// `TORCHELASTIC_RUN_ID`) rank 0 serves on MASTER_PORT + 1; `DISTFLASH_RENDEZVOUS_PORT` overrides either.
public struct LaunchEnvironment: Sendable, Equatable {
    public var rank: Int
    public var worldSize: Int
    /// This process's index on its host (its GPU).
    public var localRank: Int
    public var masterAddress: String
    public var masterPort: Int
    /// Which launcher's variables were used.
    public var launcher: String

    public init(rank: Int, worldSize: Int, localRank: Int, masterAddress: String, masterPort: Int, launcher: String) {
        (self.rank, self.worldSize, self.localRank) = (rank, worldSize, localRank)
        (self.masterAddress, self.masterPort, self.launcher) = (masterAddress, masterPort, launcher)
    }

    /// The launch described by `environment` (normally the process's), or nil when no launcher variables are set
    /// or they describe a single process (nothing to join: e.g. `srun -n1`). Throws when they are set but
    /// incomplete or out of range, naming the variable.
    public static func detect(_ environment: [String: String]) throws -> LaunchEnvironment? {
        let launchers: [(name: String, rank: String, size: String, local: String)] = [
            ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
            ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
            ("Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
        ]
        guard let launcher = launchers.first(where: { environment[$0.rank] != nil }) else { return nil }
        func integer(_ name: String, default value: Int? = nil) throws -> Int {
            guard let text = environment[name] else {
                if let value { return value }
                throw DistFlashError(.invalidProblem, "\(name) is not set: \(launcher.name) sets \(launcher.rank) "
                    + "but this launch also needs \(name)")
            }
            guard let number = Int(text) else {
                throw DistFlashError(.invalidProblem, "\(name) = \"\(text)\": must be an integer")
            }
            return number
        }
        let rank = try integer(launcher.rank), size = try integer(launcher.size)
        let local = try integer(launcher.local, default: rank)
        guard size >= 1 else { throw DistFlashError(.invalidProblem, "\(launcher.size) = \(size): must be ≥ 1") }
        guard (0..<size).contains(rank) else {
            throw DistFlashError(.invalidProblem, "\(launcher.rank) = \(rank): must be in 0..<\(launcher.size) = \(size)")
        }
        guard local >= 0 else { throw DistFlashError(.invalidProblem, "\(launcher.local) = \(local): must be ≥ 0") }
        guard size > 1 else { return nil }
        guard let address = environment["MASTER_ADDR"], !address.isEmpty else {
            throw DistFlashError(.invalidProblem, "MASTER_ADDR is not set: give the host of rank 0 "
                + "(e.g. MASTER_ADDR=127.0.0.1 on one host)")
        }
        let port = environment["DISTFLASH_RENDEZVOUS_PORT"] != nil ? try integer("DISTFLASH_RENDEZVOUS_PORT")
            : try integer("MASTER_PORT", default: 29500) + (environment["TORCHELASTIC_RUN_ID"] != nil ? 1 : 0)
        guard (1...65535).contains(port) else {
            throw DistFlashError(.invalidProblem, "rendezvous port \(port) (from MASTER_PORT or "
                + "DISTFLASH_RENDEZVOUS_PORT): must be in 1…65535")
        }
        return LaunchEnvironment(rank: rank, worldSize: size, localRank: local, masterAddress: address,
                                 masterPort: port, launcher: launcher.name)
    }
}
