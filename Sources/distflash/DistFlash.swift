import ArgumentParser

@main
struct DistFlash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distflash",
        abstract: "Distributed, memory-efficient FlashAttention (DistFlashAttn) for long-context training.",
        subcommands: [AttentionCommand.self, BenchCommand.self, PlanCommand.self, TrainCommand.self]
    )
}
