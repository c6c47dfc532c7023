import Foundation

/// A fresh directory under the system's temporary directory for one test's files (sockets,
/// logs, disks), removed with everything in it when the value goes away.
public final class TestDirectory {
    public let url: URL

    /// `prefix` names the test in the directory's name (`prefix-UUID`).
    public init(_ prefix: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { try? FileManager.default.removeItem(at: url) }
}
