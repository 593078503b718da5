import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Rank 0 hands a small blob (NCCL's unique id) to every other rank over TCP at `MASTER_ADDR:MASTER_PORT`.
///
/// Wire format: a peer sends `DFA1` + its rank (UInt32, little-endian); rank 0 answers with the blob's length
/// (UInt32, little-endian) + the blob. Every wait is bounded by `timeout`, so a rank that never arrives makes the
/// others fail with an error that names it instead of hanging.
public enum Rendezvous {
    static let magic: [UInt8] = Array("DFA1".utf8)

    /// Rank 0: listens on `port` (0: any free port, passed to `ready`), sends `blob` to ranks 1..<worldSize as they
    /// connect, and returns once every one has it.
    public static func serve(_ blob: [UInt8], port: Int, worldSize: Int, timeout: TimeInterval,
                             ready: (Int) -> Void = { _ in }) throws {
        let deadline = Date().addingTimeInterval(timeout)
        let listener = try Socket.listening(port: port)
        ready(try listener.port())
        var served = Set<Int>()
        while served.count < worldSize - 1 {
            guard let peer = try listener.accept(before: deadline) else {
                let missing = (1..<worldSize).filter { !served.contains($0) }
                throw DistFlashError(.runtime, "rendezvous on port \(port): ranks \(missing) did not connect within "
                    + "\(timeout) s — are all \(worldSize) processes started with the same MASTER_ADDR/MASTER_PORT?")
            }
            let hello = try peer.read(8, before: deadline)
            guard Array(hello[0..<4]) == magic else {
                throw DistFlashError(.runtime, "rendezvous on port \(port): a connection sent \(hello.prefix(4)) "
                    + "instead of the DFA1 greeting — is another service using this port?")
            }
            let rank = Int(UInt32(littleEndianBytes: hello[4..<8]))
            guard (1..<worldSize).contains(rank), !served.contains(rank) else {
                throw DistFlashError(.runtime, "rendezvous: a peer announced rank \(rank), expected one of "
                    + "\((1..<worldSize).filter { !served.contains($0) })")
            }
            try peer.write(UInt32(blob.count).littleEndianBytes + blob)
            served.insert(rank)
        }
    }

    /// Ranks ≠ 0: connects to `host:port` (retrying until rank 0 listens), announces `rank`, returns the blob.
    public static func fetch(host: String, port: Int, rank: Int, timeout: TimeInterval) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        let connection = try Socket.connecting(host: host, port: port, before: deadline)
        try connection.write(magic + UInt32(rank).littleEndianBytes)
        let length = Int(UInt32(littleEndianBytes: try connection.read(4, before: deadline)[0..<4]))
        guard length <= 1 << 20 else {
            throw DistFlashError(.runtime, "rendezvous with \(host):\(port): announced a \(length)-byte id (> 1 MiB)")
        }
        return try connection.read(length, before: deadline)
    }
}

/// A TCP socket closed on deinit. Blocking calls are bounded with poll().
private final class Socket {
    let descriptor: Int32

    private init(_ descriptor: Int32) { self.descriptor = descriptor }
    deinit { close(descriptor) }

    private static func failure(_ what: String) -> DistFlashError {
        DistFlashError(.runtime, "rendezvous: \(what) failed: \(String(cString: strerror(errno)))")
    }

    static func listening(port: Int) throws -> Socket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw failure("socket()") }
        let socket = Socket(fd)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = in_addr_t(0)  // INADDR_ANY
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw failure("bind(port \(port))") }
        guard listen(fd, 128) == 0 else { throw failure("listen(port \(port))") }
        return socket
    }

    static func connecting(host: String, port: Int, before deadline: Date) throws -> Socket {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var lastError = "no attempt"
        while true {
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            if status == 0, let info = list {
                defer { freeaddrinfo(list) }
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
                guard fd >= 0 else { throw failure("socket()") }
                let socket = Socket(fd)
                // Bound the connect itself by the time left.
                var wait = timeval(tv_sec: max(1, Int(deadline.timeIntervalSinceNow)), tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
                if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return socket }
                lastError = String(cString: strerror(errno))
            } else {
                lastError = String(cString: gai_strerror(status))
            }
            if Date() >= deadline {
                throw DistFlashError(.runtime, "rendezvous: could not reach rank 0 at \(host):\(port) before the "
                    + "timeout (last error: \(lastError)) — is rank 0 running, and MASTER_ADDR/MASTER_PORT right?")
            }
            usleep(50_000)  // rank 0 may not listen yet
        }
    }

    func port() throws -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let status = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard status == 0 else { throw Self.failure("getsockname()") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The next connection, or nil when the deadline passes first.
    func accept(before deadline: Date) throws -> Socket? {
        guard try wait(for: Int16(POLLIN), before: deadline) else { return nil }
        let fd = Glibc.accept(descriptor, nil, nil)
        guard fd >= 0 else { throw Self.failure("accept()") }
        return Socket(fd)
    }

    func read(_ count: Int, before deadline: Date) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            guard try wait(for: Int16(POLLIN), before: deadline) else {
                throw DistFlashError(.runtime, "rendezvous: timed out after \(done) of \(count) bytes")
            }
            let n = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + done, count - done, 0) }
            guard n > 0 else {
                throw DistFlashError(.runtime, "rendezvous: connection closed after \(done) of \(count) bytes")
            }
            done += n
        }
        return bytes
    }

    func write(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Self.failure("send()") }
            done += n
        }
    }

    private func wait(for events: Int16, before deadline: Date) throws -> Bool {
        while true {
            let milliseconds = Int32(max(0, min(Double(Int32.max), deadline.timeIntervalSinceNow * 1000)))
            var entry = pollfd(fd: descriptor, events: events, revents: 0)
            let ready = poll(&entry, 1, milliseconds)
            if ready > 0 { return true }
            if ready == 0 { return false }
            if errno != EINTR { throw Self.failure("poll()") }
        }
    }
}

extension UInt32 {
    init(littleEndianBytes bytes: ArraySlice<UInt8>) {
        self = bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    var littleEndianBytes: [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: self >> (8 * $0)) } }
}
