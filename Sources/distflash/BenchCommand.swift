import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (programs, not tests).",
        subcommands: [CPUBench.self, CUDABench.self, GPUsBench.self]
    )
}
