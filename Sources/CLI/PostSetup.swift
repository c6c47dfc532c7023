import Glibc
import Synchronization
import SystemSupport

/// `-runas USER` or `-runas UID:GID` (QEMU 7.2's os_set_runas): the identity the process takes
/// once the machine is built. A name is looked up at once, as QEMU does, so a typo fails before
/// anything starts.
struct RunAs: Equatable, Sendable {
    var uid: uid_t
    var gid: gid_t
    /// The groups the process keeps: the user's (getgrouplist, read now, since under -chroot
    /// the group file is out of reach later), or only `gid` for numeric ids.
    var groups: [gid_t]

    init(uid: uid_t, gid: gid_t, groups: [gid_t]) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    init(parsing text: String) throws(SystemError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) {
            self.init(uid: uid, gid: gid, groups: [gid])
            return
        }
        guard let entry = getpwnam(text) else { throw .configuration("User \"\(text)\" doesn't exist") }  // QEMU's words
        let (uid, gid) = (entry.pointee.pw_uid, entry.pointee.pw_gid)
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        while getgrouplist(text, gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))  // count now says how many there are
        }
        self.init(uid: uid, gid: gid, groups: Array(groups.prefix(Int(count))))
    }

    /// QEMU's change_process_uid, with its messages.
    func apply() throws(SystemError) {
        guard setgid(gid) == 0 else { throw SystemError(.syscall, "Failed to setgid(\(gid))", errno: Errno.current) }
        guard setgroups(groups.count, groups) == 0 else {
            throw SystemError(.syscall, "Failed to setgroups(\(groups.count), \(groups))", errno: Errno.current)
        }
        guard setuid(uid) == 0 else { throw SystemError(.syscall, "Failed to setuid(\(uid))", errno: Errno.current) }
        // Root must be gone for good: a process that could take uid 0 back has dropped nothing.
        if uid != 0 && setuid(0) != -1 { throw SystemError(.syscall, "Dropping privileges failed") }
    }
}

/// What happens once, when the first board is built and before its first guest instruction
/// (QEMU's os_setup_post): `-daemonize` moves to `/`, `-chroot` takes its root, `-runas` its
/// user, `-sandbox` forbids both from then on (`SandboxPolicy.lockDown`), and the waiting
/// `-daemonize` caller is told the machine is up. Files the boards open again at
/// each reset are kept from the first one on (`KeptFiles`) when any of the first three is
/// asked, since the paths stop working.
final class PostSetup: Sendable {
    private let config: SystemConfiguration
    private let daemon: Daemon?
    private let done = Atomic(false)

    init(config: SystemConfiguration, daemon: Daemon?) {
        self.config = config
        self.daemon = daemon
        if config.daemonize || config.chroot != nil || config.runAs != nil { KeptFiles.startRecording() }
    }

    /// A board is built; only the first call acts.
    func boardBuilt() throws(SystemError) {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if config.daemonize {
            _ = try syscall("not able to chdir to /") { chdir("/") }
        }
        if let root = config.chroot {
            _ = try syscall("chroot failed") { Glibc.chroot(root) }  // QEMU's words (change_root)
            _ = try syscall("not able to chdir to /") { chdir("/") }
        }
        try config.runAs?.apply()
        KeptFiles.seal()
        try config.sandbox?.lockDown(after: config.sandboxSetup)
        daemon?.ready()  // the machine is built: -daemonize's caller may go
    }
}
