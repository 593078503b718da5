/// Every error the library throws: a code to branch on and a message that names the offending value, the rule
/// it broke, and what to do.
public struct DistFlashError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Code: String, Sendable {
        /// A problem parameter (shape, scale, mask) breaks a rule.
        case invalidProblem
        /// Tensors passed to a primitive do not fit each other or the problem.
        case shapeMismatch
        /// A file could not be read or written, or its contents are malformed.
        case invalidFile
        /// A worker, transfer or device failed.
        case runtime
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
