// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "DistFlashAttn",
    products: [
        .library(name: "DistFlashAttn", targets: ["DistFlashAttn", "DistFlashAttnCPU", "DistFlashAttnCUDA"]),
        .executable(name: "distflash", targets: ["distflash"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Problem, masks, tensors, .npy files, partial results: the vocabulary every backend shares.
        .target(name: "DistFlashAttn"),
        // Innermost CPU micro-kernels (GEMM panels, vector exp), with AVX-512 / AVX2 / generic paths
        // chosen at run time so one binary runs on any x86-64 machine.
        .target(
            name: "_CPUKernels",
            cSettings: [.unsafeFlags(["-O3", "-ffp-contract=fast"])]
        ),
        // The CPU backend: tiled FlashAttention forward/backward block primitives and their merge.
        .target(name: "DistFlashAttnCPU", dependencies: ["DistFlashAttn", "_CPUKernels"]),
        // NCCL's unique-id struct and ncclCommInitRank's type, which take a C declaration to call by value.
        .target(name: "_NCCLTypes"),
        // The CUDA backend: driver, NVRTC, NCCL (loaded at run time, nothing needed to build) and the kernels.
        .target(
            name: "DistFlashAttnCUDA",
            dependencies: ["DistFlashAttn", "_NCCLTypes"],
            resources: [
                .embedInCode("kernels/attention_simt.cu"), .embedInCode("kernels/attention_forward_mma.cu"),
                .embedInCode("kernels/attention_forward_wgmma.cu"),
                .embedInCode("kernels/attention_backward_mma.cu"), .embedInCode("kernels/attention_backward_wgmma.cu"),
                .embedInCode("kernels/mma_primitives.cuh"), .embedInCode("kernels/wgmma_primitives.cuh"),
                .embedInCode("kernels/tma_primitives.cuh"),
                .embedInCode("kernels/input_type.cuh"),
                .embedInCode("kernels/tensor_ops.cu"), .embedInCode("kernels/training_ops.cu"),
            ]
        ),
        // LLaMA-style model with explicit backward, checkpointing strategies, optimizer, data, trainer.
        .target(name: "DistFlashTrain", dependencies: ["DistFlashAttn", "DistFlashAttnCPU"]),
        // The training model on GPUs: cuBLAS GEMMs, the training kernels and the attention on device tensors.
        .target(name: "DistFlashTrainCUDA", dependencies: ["DistFlashAttn", "DistFlashAttnCUDA", "DistFlashTrain"]),
        // Naive float64 attention: the independent reference for tests and `--check`.
        .target(name: "DistFlashAttnReference", dependencies: ["DistFlashAttn"]),
        .executableTarget(
            name: "distflash",
            dependencies: [
                "DistFlashAttn", "DistFlashAttnCPU", "DistFlashAttnCUDA", "DistFlashAttnReference", "DistFlashTrain",
                "DistFlashTrainCUDA", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "DistFlashAttnTests", dependencies: ["DistFlashAttn", "DistFlashAttnReference"]),
        .testTarget(
            name: "DistFlashAttnCPUTests",
            dependencies: ["DistFlashAttn", "DistFlashAttnCPU", "DistFlashAttnReference"]
        ),
        .testTarget(
            name: "DistFlashAttnCUDATests",
            dependencies: ["DistFlashAttn", "DistFlashAttnCPU", "DistFlashAttnCUDA", "DistFlashAttnReference", "DistFlashTrain",
                           "DistFlashTrainCUDA"]
        ),
        .testTarget(
            name: "DistFlashTrainTests",
            dependencies: ["DistFlashAttn", "DistFlashAttnCPU", "DistFlashTrain", "DistFlashAttnReference"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
