/// A component whose state travels in snapshots and migration streams (DESIGN.md §3, §5).
/// `State` is a plain versioned value; a state read from a stream is untrusted input, so
/// `restore` validates every field and throws rather than trusting it.
public protocol Snapshottable {
    associatedtype State: Codable, Sendable
    func saveState() -> State
    func restore(_ state: State) throws
}
