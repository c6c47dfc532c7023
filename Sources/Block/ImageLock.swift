import Glibc
import Synchronization
import SystemSupport

// Image locking as QEMU's `file` driver does it (block/file-posix.c), so that swemu, qemu-img,
// qemu-io and qemu-system-* each refuse an image another of them is using in a way they cannot
// share.
//
// The protocol, which every participant follows:
// - Each block permission (below) has two bytes in the image file: byte 100 + bit ("I hold
//   this permission") and byte 200 + bit ("I do not let others hold it").
// - They are open-file-description locks (`F_OFD_SETLK`), always shared (`F_RDLCK`): taking
//   one never fails because another user holds the same byte; it only announces.
// - A user that wants permission P first takes its bytes, then tests (`F_OFD_GETLK` asking for
//   a write lock, which any other description's read lock blocks) that nobody else holds
//   byte 200 + P ("Failed to get "P" lock"), and that nobody else holds byte 100 + Q for any
//   Q it does not share ("Failed to get shared "Q" lock"). Taking before testing means two
//   users racing both see each other and both back off; neither slips through.
// - OFD locks belong to the open file description, not the process: two opens in one process
//   conflict like two processes, and closing one descriptor drops only its own locks.

/// QEMU's block permissions (include/block/block-common.h). In 7.2 there are four:
/// `BLK_PERM_GRAPH_MOD` was dropped in 6.2, so `BLK_PERM_ALL` is 0x0f and the bytes in use
/// are 100-103 and 200-203.
package struct BlockPermissions: OptionSet, Sendable, Hashable, CustomStringConvertible {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue & 0x0f }

    /// BLK_PERM_CONSISTENT_READ: what one reads is what was last written.
    package static let consistentRead = BlockPermissions(rawValue: 0x01)
    /// BLK_PERM_WRITE: the contents may change.
    package static let write = BlockPermissions(rawValue: 0x02)
    /// BLK_PERM_WRITE_UNCHANGED: writes that leave the contents as they are.
    package static let writeUnchanged = BlockPermissions(rawValue: 0x04)
    /// BLK_PERM_RESIZE: the length may change.
    package static let resize = BlockPermissions(rawValue: 0x08)
    package static let all = BlockPermissions(rawValue: 0x0f)

    /// `bdrv_perm_names`, the words of QEMU's lock messages, by bit.
    package static let names = ["consistent read", "write", "write unchanged", "resize"]
    /// The lock byte of "holds permission bit i" is `permissionBase + i`.
    package static let permissionBase: Int64 = 100
    /// The lock byte of "does not share permission bit i" is `sharedBase + i`.
    package static let sharedBase: Int64 = 200

    /// The bit numbers set, lowest first.
    var bits: [Int] { (0..<4).filter { rawValue >> $0 & 1 != 0 } }

    package var description: String { bits.map { BlockPermissions.names[$0] }.joined(separator: ", ") }
}

/// `locking=` of QEMU's `file` driver (`-drive file.locking=`).
package enum LockingMode: String, Sendable, CaseIterable {
    /// Lock, and fail if the file cannot be locked.
    case on
    /// Take no locks and test none: nothing protects the image.
    case off
    /// QEMU's default: lock where OFD locks work; where the kernel or the file system has no
    /// OFD locks (EINVAL, ENOLCK, EOPNOTSUPP), go on without them.
    case auto
}

/// What one user of an image asks of the image's file, before the format adds its own needs.
public struct ImageLocking: Sendable, Equatable {
    package var mode: LockingMode
    /// `force-share=on` / `qemu-img -U`: every permission is shared (read-only users only).
    package var forceShare: Bool
    /// What this user lets other users do.
    package var shared: BlockPermissions

    package init(mode: LockingMode = .auto, forceShare: Bool = false, shared: BlockPermissions = .all) {
        self.mode = mode
        self.forceShare = forceShare
        self.shared = shared
    }

    /// An image tool (qemu-img's `blk_new_open`): it shares everything itself; a qcow2 file
    /// still never shares write or resize.
    package static let tool = ImageLocking()
    /// A guest's disk (virtio-blk with `share-rw=off`): others may read and resize, not write.
    public static let device = ImageLocking(shared: [.consistentRead, .writeUnchanged, .resize])
    /// A reader that needs the contents to stay put (a backing file, `convert`'s source,
    /// qemu-img's `BDRV_O_NO_SHARE`): others may read, not write or resize.
    package static let stableReader = ImageLocking(shared: [.consistentRead, .writeUnchanged])
    /// No locks at all.
    package static let none = ImageLocking(mode: .off)

    /// What the backing file of an image opened so takes: it is read, and nobody may write or
    /// resize it. Force-share carries down the chain; `locking=` does not (QEMU's
    /// `file.locking=` is an option of the top image's own file).
    package var forBacking: ImageLocking {
        ImageLocking(mode: .auto, forceShare: forceShare, shared: ImageLocking.stableReader.shared)
    }

    /// The permissions this user takes on the file of an image opened `readOnly`, and those it
    /// shares. `metadata`: the format keeps metadata in the file (qcow2), so a writer may also
    /// resize it and no user lets anybody else write or resize it (QEMU's
    /// `bdrv_default_perms_for_storage`); a raw image passes its user's wishes through.
    package func request(readOnly: Bool, metadata: Bool) -> LockRequest {
        var perm: BlockPermissions = .consistentRead
        if !readOnly { perm.formUnion(metadata ? [.write, .resize] : [.write]) }
        var shared = forceShare ? .all : self.shared
        if metadata && !forceShare { shared.subtract([.write, .resize]) }
        return LockRequest(mode: mode, perm: perm, shared: shared)
    }
}

/// The permissions one open file takes and shares.
package struct LockRequest: Sendable, Equatable {
    package var mode: LockingMode
    package var perm: BlockPermissions
    package var shared: BlockPermissions

    package init(mode: LockingMode = .auto, perm: BlockPermissions, shared: BlockPermissions) {
        self.mode = mode
        self.perm = perm
        self.shared = shared
    }
}

extension SystemError.Code {
    /// Another user holds an image in a way this open cannot share (QEMU's lock messages).
    package static let imageLocked = SystemError.Code(rawValue: "image-locked")
}

/// The lock bytes on one descriptor: take, drop and test them. The primitive under
/// `ImageLocks`; tests use it directly on two descriptors of one file.
package enum LockBytes {
    // linux/fcntl.h (Glibc does not import them without _GNU_SOURCE).
    static let getOFD: Int32 = 36  // F_OFD_GETLK
    static let setOFD: Int32 = 37  // F_OFD_SETLK

    package enum Failure: Error, Equatable {
        /// The byte is locked by another description in a way that blocks ours.
        case conflict
        /// The call failed; `unsupported` when OFD locks do not exist here.
        case failed(Errno, unsupported: Bool)
    }

    /// One `fcntl` on one byte. `type`: F_RDLCK, F_WRLCK or F_UNLCK.
    private static func fcntlByte(_ fd: Int32, _ command: Int32, _ type: Int32, _ byte: Int64) -> (Int32, flock) {
        var fl = flock()
        fl.l_type = Int16(type)
        fl.l_whence = Int16(SEEK_SET)
        fl.l_start = off_t(byte)
        fl.l_len = 1
        fl.l_pid = 0  // the OFD commands require 0
        while true {
            // SAFETY: `fl` is a live, initialised `struct flock` for the duration of the call, the
            // argument type both F_OFD_SETLK and F_OFD_GETLK take; the kernel writes at most one
            // `struct flock` back into it.
            let result = withUnsafeMutablePointer(to: &fl) { fcntl(fd, command, UnsafeMutableRawPointer($0)) }
            if result == -1 && errno == EINTR { continue }
            return (result, fl)
        }
    }

    private static func failure(_ err: Errno) -> Failure {
        switch err.rawValue {
        case EAGAIN, EACCES: return .conflict
        case EINVAL, ENOLCK, EOPNOTSUPP, ENOSYS: return .failed(err, unsupported: true)
        default: return .failed(err, unsupported: false)
        }
    }

    /// Takes (a shared lock on) `byte`.
    package static func lock(_ fd: Int32, byte: Int64) -> Failure? {
        fcntlByte(fd, setOFD, Int32(F_RDLCK), byte).0 == 0 ? nil : failure(Errno.current)
    }

    /// Drops this description's lock on `byte`.
    package static func unlock(_ fd: Int32, byte: Int64) -> Failure? {
        fcntlByte(fd, setOFD, Int32(F_UNLCK), byte).0 == 0 ? nil : failure(Errno.current)
    }

    /// Whether another open file description holds any lock on `byte` (QEMU's
    /// `qemu_lock_fd_test(fd, byte, 1, true)`). The caller's own locks never count.
    package static func heldByOthers(_ fd: Int32, byte: Int64) -> Result<Bool, Failure> {
        let (result, fl) = fcntlByte(fd, getOFD, Int32(F_WRLCK), byte)
        guard result == 0 else { return .failure(failure(Errno.current)) }
        return .success(Int32(fl.l_type) != Int32(F_UNLCK))
    }

    /// The bytes that announce `perm` held and `unshared` not shared.
    package static func bytes(perm: BlockPermissions, unshared: BlockPermissions) -> [Int64] {
        perm.bits.map { BlockPermissions.permissionBase + Int64($0) } + unshared.bits.map { BlockPermissions.sharedBase + Int64($0) }
    }

    /// QEMU's messages for a permission another user will not share, or a permission another
    /// user holds that this one will not share.
    package static func conflictMessage(bit: Int, shared: Bool, path: String) -> String {
        let name = BlockPermissions.names[bit]
        return (shared ? "Failed to get shared \"\(name)\" lock" : "Failed to get \"\(name)\" lock")
            + "\nIs another process using the image [\(path)]?"
    }
}

/// The holder of one open image file's permissions, for as long as it lives. Created by
/// `ImageLocks.acquire`; dropping the last reference gives the permissions back.
package final class ImageLockHolder: Sendable {
    let id: UInt64
    let file: ImageLocks.FileID
    package let path: String

    init(id: UInt64, file: ImageLocks.FileID, path: String) {
        self.id = id
        self.file = file
        self.path = path
    }

    deinit { ImageLocks.release(self) }

    /// Gives the permissions back now (a clean close); the holder's deinit then does nothing.
    package func release() { ImageLocks.release(self) }

    /// What this holder takes and shares now.
    package var request: LockRequest? { ImageLocks.request(of: self) }

    /// Changes what this holder takes and shares (QEMU's check-then-set of new permissions);
    /// on failure the old ones stay.
    package func change(perm: BlockPermissions, shared: BlockPermissions) throws(SystemError) {
        try ImageLocks.change(self, perm: perm, shared: shared)
    }

    /// Keeps this holder's bytes locked but stops counting it against other opens in this
    /// process: the image is closed and about to go, and the same process is reopening it (a
    /// reset rebuilding the machine, a commit writing back under a read-only open). The bytes
    /// go when the holder does, after the new open has taken its own: nobody else can slip in.
    package func retire(_ retired: Bool = true) { ImageLocks.retire(self, retired) }
}

/// Every image file this process holds locks on. Opens of one file in this process share one
/// open file description for their locks (a duplicate of the first open's descriptor) and are
/// checked against each other here, in memory, with the same rules and messages; the kernel's
/// test on that description then sees only other processes (and other descriptions).
package enum ImageLocks {
    struct FileID: Hashable, Sendable {
        let device: UInt64
        let inode: UInt64
    }

    struct Holder {
        var perm: BlockPermissions
        var shared: BlockPermissions
        var mode: LockingMode
        var retired = false
    }

    struct Entry {
        /// Owned here: closed when the last holder goes.
        let fd: Int32
        var holders: [UInt64: Holder] = [:]
        /// The bits whose bytes the description holds now.
        var lockedPerm: BlockPermissions = []
        var lockedUnshared: BlockPermissions = []
    }

    struct State {
        var entries: [FileID: Entry] = [:]
        var nextID: UInt64 = 1
    }

    private static let state = Mutex(State())

    /// Takes `request` on the file open as `fd` (QEMU's sequence: take the new bytes, then test
    /// for conflicts, and on a conflict drop what was taken). Returns nil when no lock is taken
    /// (`locking=off`, or `auto` where the file cannot be locked).
    package static func acquire(fd: Int32, path: String, _ request: LockRequest) throws(SystemError) -> ImageLockHolder? {
        guard request.mode != .off else { return nil }
        var st = stat()
        _ = try syscall("cannot stat '\(path)'") { fstat(fd, &st) }
        let file = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        return try state.withLock { (s: inout State) throws(SystemError) -> ImageLockHolder? in
            var entry: Entry
            let fresh: Bool
            if let existing = s.entries[file] {
                entry = existing
                fresh = false
            } else {
                let dup = fcntl(fd, F_DUPFD_CLOEXEC, 0)
                guard dup >= 0 else { throw SystemError(.syscall, "'\(path)': cannot duplicate the descriptor for its locks", errno: .current) }
                entry = Entry(fd: dup)
                fresh = true
            }
            let holder = Holder(perm: request.perm, shared: request.shared, mode: request.mode)
            do throws(SystemError) {
                try take(&entry, holder, others: entry.holders, path: path)
            } catch {
                if fresh { Glibc.close(entry.fd) } else { s.entries[file] = entry }
                if error.code == .unsupported && request.mode == .auto && fresh { return nil }
                throw error
            }
            let id = s.nextID
            s.nextID += 1
            entry.holders[id] = holder
            s.entries[file] = entry
            return ImageLockHolder(id: id, file: file, path: path)
        }
    }

    static func request(of holder: ImageLockHolder) -> LockRequest? {
        state.withLock { s in
            s.entries[holder.file]?.holders[holder.id].map { LockRequest(mode: $0.mode, perm: $0.perm, shared: $0.shared) }
        }
    }

    static func change(_ holder: ImageLockHolder, perm: BlockPermissions, shared: BlockPermissions) throws(SystemError) {
        try state.withLock { (s: inout State) throws(SystemError) in
            guard var entry = s.entries[holder.file], var mine = entry.holders[holder.id] else { return }
            var others = entry.holders
            others[holder.id] = nil
            mine.perm = perm
            mine.shared = shared
            defer { s.entries[holder.file] = entry }
            // Keep the old bytes while the new ones are tested (QEMU's prepare/commit/abort).
            try take(&entry, mine, others: entry.holders, checkingAgainst: others, path: holder.path)
            entry.holders[holder.id] = mine
            settle(&entry)
        }
    }

    static func retire(_ holder: ImageLockHolder, _ retired: Bool) {
        state.withLock { s in s.entries[holder.file]?.holders[holder.id]?.retired = retired }
    }

    static func release(_ holder: ImageLockHolder) {
        state.withLock { s in
            guard var entry = s.entries[holder.file] else { return }
            entry.holders[holder.id] = nil
            if entry.holders.isEmpty {
                // Unlocked first: the description may outlive this descriptor (the image's own
                // descriptor shares it while the closed image object lives on).
                try? apply(&entry, perm: [], unshared: [], unlock: true, path: "")
                Glibc.close(entry.fd)
                s.entries[holder.file] = nil
            } else {
                settle(&entry)
                s.entries[holder.file] = entry
            }
        }
    }

    /// Locks the bytes of `holder` on top of those of `keep`, then tests `holder` against every
    /// other user: the live holders in `checkingAgainst` (this process) and, through the
    /// kernel, every other open file description. On a conflict the bytes go back to `keep`'s.
    private static func take(_ entry: inout Entry, _ holder: Holder, others keep: [UInt64: Holder],
                             checkingAgainst others: [UInt64: Holder]? = nil, path: String) throws(SystemError) {
        let kept = union(keep)
        do throws(SystemError) {
            try apply(&entry, perm: kept.perm.union(holder.perm), unshared: kept.unshared.union(.all.subtracting(holder.shared)),
                      unlock: false, path: path)
            try check(entry.fd, holder, against: (others ?? keep).values.filter { !$0.retired }, path: path)
        } catch {
            try? apply(&entry, perm: kept.perm, unshared: kept.unshared, unlock: true, path: path)
            throw error
        }
    }

    /// The bytes every holder of `holders` needs.
    private static func union(_ holders: [UInt64: Holder]) -> (perm: BlockPermissions, unshared: BlockPermissions) {
        holders.values.reduce(into: ([], [])) { acc, h in
            acc.0.formUnion(h.perm)
            acc.1.formUnion(.all.subtracting(h.shared))
        }
    }

    /// Drops the bytes no holder needs any more (unlocking cannot conflict; a failure is ignored
    /// as QEMU does, the byte then stays locked until the description closes).
    private static func settle(_ entry: inout Entry) {
        let need = union(entry.holders)
        try? apply(&entry, perm: need.perm, unshared: need.unshared, unlock: true, path: "")
    }

    /// QEMU's `raw_apply_lock_bytes`: locks the bytes of `perm` and `unshared` not locked yet;
    /// with `unlock`, also unlocks those locked but not asked for.
    private static func apply(_ entry: inout Entry, perm: BlockPermissions, unshared: BlockPermissions,
                              unlock: Bool, path: String) throws(SystemError) {
        for (want, base, isPerm) in [(perm, BlockPermissions.permissionBase, true), (unshared, BlockPermissions.sharedBase, false)] {
            for bit in 0..<4 {
                let b = BlockPermissions(rawValue: 1 << bit)
                let locked = isPerm ? entry.lockedPerm.contains(b) : entry.lockedUnshared.contains(b)
                let byte = base + Int64(bit)
                if want.contains(b) && !locked {
                    if let failure = LockBytes.lock(entry.fd, byte: byte) { throw lockError(failure, "Failed to lock byte \(byte)", path) }
                    if isPerm { entry.lockedPerm.insert(b) } else { entry.lockedUnshared.insert(b) }
                } else if unlock && locked && !want.contains(b) {
                    if let failure = LockBytes.unlock(entry.fd, byte: byte) { throw lockError(failure, "Failed to unlock byte \(byte)", path) }
                    if isPerm { entry.lockedPerm.remove(b) } else { entry.lockedUnshared.remove(b) }
                }
            }
        }
    }

    /// QEMU's `raw_check_lock_bytes`, with this process's other live holders counted as other
    /// users: first every permission `holder` wants (is byte 200 + bit held elsewhere?), then
    /// every one it does not share (is byte 100 + bit held elsewhere?).
    private static func check(_ fd: Int32, _ holder: Holder, against others: [Holder], path: String) throws(SystemError) {
        for bit in holder.perm.bits {
            let b = BlockPermissions(rawValue: 1 << bit)
            let local = others.contains { !$0.shared.contains(b) }
            let elsewhere = try local ? true : held(fd, BlockPermissions.sharedBase + Int64(bit), path)
            if elsewhere {
                throw SystemError(.imageLocked, LockBytes.conflictMessage(bit: bit, shared: false, path: path))
            }
        }
        for bit in BlockPermissions.all.subtracting(holder.shared).bits {
            let b = BlockPermissions(rawValue: 1 << bit)
            let local = others.contains { $0.perm.contains(b) }
            let elsewhere = try local ? true : held(fd, BlockPermissions.permissionBase + Int64(bit), path)
            if elsewhere {
                throw SystemError(.imageLocked, LockBytes.conflictMessage(bit: bit, shared: true, path: path))
            }
        }
    }

    private static func held(_ fd: Int32, _ byte: Int64, _ path: String) throws(SystemError) -> Bool {
        switch LockBytes.heldByOthers(fd, byte: byte) {
        case .success(let held): return held
        case .failure(let failure): throw lockError(failure, "Failed to get lock on byte \(byte)", path)
        }
    }

    /// QEMU's wording: a byte locked by somebody else in a way that blocks a shared lock (an
    /// exclusive lock, which QEMU never takes) is reported without the errno.
    private static func lockError(_ failure: LockBytes.Failure, _ what: String, _ path: String) -> SystemError {
        switch failure {
        case .conflict:
            return SystemError(.imageLocked, "\(what)\nIs another process using the image [\(path)]?")
        case .failed(let err, let unsupported):
            return SystemError(unsupported ? .unsupported : .syscall, what, errno: err)
        }
    }
}
