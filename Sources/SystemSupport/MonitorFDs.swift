import Glibc
import Synchronization

/// Descriptors a monitor client handed over by name (QMP `getfd`: the descriptor travels
/// with the command as SCM_RIGHTS ancillary data, QEMU's monitor fds). A migration to
/// `fd:NAME` takes its descriptor from here (libvirt's `virsh save` writes through one);
/// `closefd` closes one. Names are the client's; one per name, a new one replacing the old.
public enum MonitorFDs {
    private static let named = Mutex<[String: Int32]>([:])

    /// Files `fd` (now owned here) under `name`, closing the one it replaces.
    public static func add(_ name: String, _ fd: Int32) {
        let old = named.withLock { table -> Int32? in
            defer { table[name] = fd }
            return table[name]
        }
        if let old { Glibc.close(old) }
    }

    /// Takes the descriptor named `name` out of the table (the caller owns it now).
    public static func take(_ name: String) -> Int32? {
        named.withLock { $0.removeValue(forKey: name) }
    }

    /// `closefd`: false when there is no such name.
    public static func close(_ name: String) -> Bool {
        guard let fd = take(name) else { return false }
        Glibc.close(fd)
        return true
    }
}
