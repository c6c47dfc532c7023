import Synchronization

/// A test hook for crash-consistency tests: while a journal is open for a path, every write,
/// truncate and sync an `ImageFile` issues on that path is recorded, in order, before it
/// runs. A test replays a prefix of the events, keeping any subset of the writes issued after
/// the last sync, to build the file as a power loss could leave it. Off (one relaxed atomic
/// load per write) unless a test opens one.
package enum ImageFileJournal {
    package enum Event: Sendable, Equatable {
        case write(offset: UInt64, bytes: [UInt8])
        case truncate(length: UInt64)
        case sync
    }

    private static let active = Atomic<Bool>(false)
    private static let journals = Mutex<[String: [Event]]>([:])

    /// Starts recording the I/O on `path` (as the image will be opened: the same string).
    package static func start(path: String) {
        journals.withLock { $0[path] = [] }
        active.store(true, ordering: .relaxed)
    }

    /// Stops recording on `path`; returns what was recorded.
    package static func stop(path: String) -> [Event] {
        journals.withLock { journals in
            let events = journals.removeValue(forKey: path) ?? []
            if journals.isEmpty { active.store(false, ordering: .relaxed) }
            return events
        }
    }

    @inline(__always)
    static func record(_ path: String, _ event: @autoclosure () -> Event) {
        guard active.load(ordering: .relaxed) else { return }
        journals.withLock { journals in
            if journals[path] != nil { journals[path]!.append(event()) }
        }
    }
}
