import DistFlashAttn
import Foundation

extension NCCLCommunicator {
    /// This process's rank of the run `launch` describes, on `device`: rank 0 makes the NCCL id and serves it over
    /// TCP at MASTER_ADDR:MASTER_PORT, the others fetch it; blocks until every rank has joined (bounded by
    /// `timeout`, naming the ranks that never came).
    public static func joining(_ launch: LaunchEnvironment, device: CUDADevice, timeout: TimeInterval,
                               inputs: DeviceTensor.Precision = .bfloat16) throws -> NCCLCommunicator {
        let id: [UInt8]
        if launch.rank == 0 {
            id = try NCCL().uniqueId()
            try Rendezvous.serve(id, port: launch.masterPort, worldSize: launch.worldSize, timeout: timeout)
        } else {
            id = try Rendezvous.fetch(host: launch.masterAddress, port: launch.masterPort, rank: launch.rank,
                                      timeout: timeout)
        }
        return try NCCLCommunicator(rank: launch.rank, of: launch.worldSize, device: device, id: id, timeout: timeout,
                                    inputs: inputs)
    }

    /// Float64 sums over every rank of this process's `values`, through fp32 (each split into a high and a low
    /// part: ample for losses and counts). Every rank must call it with the same count.
    public func allReduceSum(_ values: [Double], rank: Int, device: CUDADevice) throws -> [Double] {
        let parts = values.flatMap { value -> [Float] in
            let high = Float(value)
            return [high, Float(value - Double(high))]
        }
        let tensor = try DeviceTensor.upload(try Tensor(shape: [parts.count], scalars: parts), to: device, as: .float32)
        try allReduceSum([tensor], rank: rank)
        let sums = try tensor.download().scalars
        return stride(from: 0, to: sums.count, by: 2).map { Double(sums[$0]) + Double(sums[$0 + 1]) }
    }
}
