import CLinux
import CSeccomp
import Glibc
import SystemSupport

/// `-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children][,spawn=allow|deny]
/// [,resourcecontrol=allow|deny]`: a seccomp filter (seccomp(2), through libseccomp, as QEMU's
/// qemu-seccomp.c) on every thread of the process, installed as QEMU installs it: once the
/// command line is read, before any thread starts, any monitor listens or any guest instruction
/// runs; so a guest who breaks out of a device model finds a process that cannot start
/// programs, change its identity or touch the system. `-chroot` and `-runas` come later (once
/// the machine is built, `PostSetup`): the filter lets chroot and the set*id calls through
/// until then when they are asked for, and `lockDown` forbids them afterwards with a second
/// filter on top (seccomp filters stack; the stricter answer wins), so `-runas` works even
/// with elevateprivileges=deny, where QEMU's own filter would end the process.
///
/// Where QEMU's filter is a denylist (everything but its lists runs), swemu's is an allowlist:
/// the calls swemu makes once running, after start-up (reading and writing images, sockets,
/// memory and threads for a reset's new board, KVM's ioctls, timers), and nothing else. The
/// option words keep QEMU's meaning on top of it:
/// - `obsolete` (deny by default): the obsolete calls (QEMU's list) are allowed only with allow.
/// - `elevateprivileges=deny|children`: the set*id calls and setgroups are not allowed;
///   `children` as QEMU, which also sets no_new_privs (libseccomp always sets it).
/// - `spawn=deny`: fork, vfork, execve, execveat, setns, unshare and a clone that does not make
///   a thread are not allowed (with `allow`, `migrate exec:`, guestfwd `cmd:` and tap scripts
///   keep working: their programs inherit the filter).
/// - `resourcecontrol=deny`: setpriority, sched_setparam, sched_setscheduler and
///   sched_setaffinity fail with EPERM, as QEMU's (glibc probes some of them; that must not kill).
/// A call outside the allowlist ends the process (SECCOMP_RET_TRAP: its SIGSYS handler names
/// the call on stderr, then the process dies of SIGSYS, as QEMU's SECCOMP_RET_KILL_PROCESS).
/// clone3 always fails with ENOSYS: a filter cannot read its flags (they are in memory), so
/// glibc falls back to clone, whose flags it can (QEMU does the same).
struct SandboxPolicy: Equatable, Sendable {
    enum Privileges: String, Sendable { case allow, deny, children }

    var obsolete = false
    var elevatePrivileges = Privileges.allow
    var spawn = true
    var resourceControl = true

    /// `-sandbox`'s argument; nil for `off`. QEMU's messages (parse_sandbox).
    static func parse(_ text: String, option: String) throws(SystemError) -> SandboxPolicy? {
        let opts = try OptionGroup.sandbox.parse(text, option: option)
        guard try opts.bool("enable", default: false) else { return nil }
        var policy = SandboxPolicy()
        func choice(_ key: String, _ words: [String]) throws(SystemError) -> String? {
            guard let value = opts.string(key) else { return nil }
            guard words.contains(value) else { throw .configuration("invalid argument for \(key)") }
            return value
        }
        if let value = try choice("obsolete", ["allow", "deny"]) { policy.obsolete = value == "allow" }
        if let value = try choice("elevateprivileges", ["allow", "deny", "children"]) {
            policy.elevatePrivileges = Privileges(rawValue: value) ?? .allow
        }
        if let value = try choice("spawn", ["allow", "deny"]) { policy.spawn = value == "allow" }
        if let value = try choice("resourcecontrol", ["allow", "deny"]) { policy.resourceControl = value == "allow" }
        return policy
    }

    /// What swemu calls once running, whatever the options (x86-64 names; a name this
    /// libseccomp does not know is passed over).
    static let allowed: [String] = [
        // Descriptors, files and images.
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "ioctl", "flock", "pipe", "pipe2",
        "fsync", "fdatasync", "sync_file_range", "fallocate", "ftruncate", "truncate", "sendfile", "splice", "copy_file_range",
        "open", "openat", "creat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
        "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "chdir", "fchdir",
        "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "fchmod", "umask",
        "utimensat", "memfd_create",
        // Linux native AIO (aio=native).
        "io_setup", "io_destroy", "io_submit", "io_getevents", "io_cancel",
        // Memory: guest RAM, the JIT's code buffer, the allocator.
        "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mlock", "mlock2", "munlock", "mlockall",
        "munlockall", "mincore", "brk", "membarrier",
        // Signals: the shutdown signals, vCPU kicks, the terminal's handlers, raise().
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigsuspend", "rt_sigpending",
        "sigaltstack", "signalfd", "signalfd4", "kill", "tgkill", "tkill", "pause", "getitimer", "setitimer", "alarm",
        // Time and waiting.
        "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
        "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
        "timerfd_create", "timerfd_settime", "timerfd_gettime",
        "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
        "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
        // Threads (a reset's new board starts new vCPU threads).
        "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "gettid",
        "exit", "exit_group", "sched_yield", "sched_getaffinity", "sched_getparam", "sched_getscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "getpriority", "arch_prctl", "prctl",
        "wait4", "waitid",
        // A filter on top (lockDown after -chroot/-runas): stacked filters only ever forbid more.
        "seccomp",
        // Who and where this process is.
        "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid",
        "getpgid", "getpgrp", "getsid", "capget", "uname", "sysinfo", "getrlimit", "prlimit64", "getrusage", "times",
        "getrandom", "getcpu",
        // Sockets: monitors, GDB, chardevs, migration, network backends.
        "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
        "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    ]

    /// QEMU's obsolete set (QEMU_SECCOMP_SET_OBSOLETE), as far as x86-64 has them.
    static let obsoleteCalls = ["_sysctl", "sysfs", "uselib", "ustat", "create_module", "get_kernel_syms", "query_module"]
    /// QEMU's QEMU_SECCOMP_SET_PRIVILEGED, and setgroups.
    static let privilegeCalls = ["setuid", "setgid", "setpgid", "setsid", "setreuid", "setregid", "setresuid", "setresgid",
                                 "setfsuid", "setfsgid", "setgroups"]
    /// QEMU's QEMU_SECCOMP_SET_SPAWN (clone apart: see `install`).
    static let spawnCalls = ["fork", "vfork", "execve", "execveat", "setns", "unshare"]
    /// QEMU's QEMU_SECCOMP_SET_RESOURCECTL.
    static let resourceCalls = ["setpriority", "sched_setparam", "sched_setscheduler", "sched_setaffinity"]

    /// Every call this policy lets run as it is.
    var allowedCalls: [String] {
        var calls = Self.allowed
        if obsolete { calls += Self.obsoleteCalls }
        if elevatePrivileges == .allow { calls += Self.privilegeCalls }
        if spawn { calls += Self.spawnCalls + ["clone"] }
        if resourceControl { calls += Self.resourceCalls }
        return calls
    }

    /// clone's flags (linux/sched.h): a thread has CLONE_THREAD; the namespace flags make a
    /// new namespace, which only a spawning process may.
    static let cloneThread: UInt64 = 0x0001_0000
    static let cloneNamespaces: UInt64 = 0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000
        | 0x2000_0000 | 0x4000_0000 | 0x0000_0080  // NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME

    /// What -chroot and -runas need once the machine is built.
    struct Setup: Sendable {
        var chroot = false
        var runAs = false
    }

    static let failed = SystemError(.syscall, "failed to install seccomp syscall filter in the kernel")  // QEMU's words

    /// Loads the filter on every thread of the process (SCMP_FLTATR_CTL_TSYNC), letting through
    /// what `setup` needs until `lockDown`. `program` prefixes the trap's message
    /// ("swemu-system-riscv64: ").
    func install(program: String, setup: Setup = Setup()) throws(SystemError) {
        try Self.installTrapReporter(program: program)
        try Self.load(defaultAction: SCMP_ACT_TRAP) { (add) throws(SystemError) in
            var calls = Set(allowedCalls)
            if setup.chroot { calls.insert("chroot") }
            if setup.runAs { calls.formUnion(Self.privilegeCalls) }
            for name in calls { try add(name, SCMP_ACT_ALLOW, []) }
            if !spawn {
                // Threads only: CLONE_THREAD set and no namespace flag (one masked comparison).
                try add("clone", SCMP_ACT_ALLOW, [scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ,
                                                               datum_a: Self.cloneThread | Self.cloneNamespaces,
                                                               datum_b: Self.cloneThread)])
            }
            try add("clone3", cseccomp_act_errno(UInt16(ENOSYS)), [])
            if !resourceControl {
                for name in Self.resourceCalls { try add(name, cseccomp_act_errno(UInt16(EPERM)), []) }
            }
        }
        if !spawn { Spawning.deny("-sandbox spawn=deny") }
    }

    /// -chroot and -runas are done: what `install` let through for them is forbidden from now on.
    func lockDown(after setup: Setup) throws(SystemError) {
        var forbidden: [String] = setup.chroot ? ["chroot"] : []
        if setup.runAs && elevatePrivileges != .allow { forbidden += Self.privilegeCalls }
        guard !forbidden.isEmpty else { return }
        try Self.load(defaultAction: SCMP_ACT_ALLOW) { (add) throws(SystemError) in
            for name in forbidden { try add(name, SCMP_ACT_TRAP, []) }
        }
    }

    /// Builds a filter with `rules` (which add one rule per call) and loads it on every thread.
    private static func load(defaultAction: UInt32,
                             _ rules: (_ add: (String, UInt32, [scmp_arg_cmp]) throws(SystemError) -> Void) throws(SystemError) -> Void)
        throws(SystemError) {
        guard let ctx = seccomp_init(defaultAction) else { throw failed }
        defer { seccomp_release(ctx) }
        guard seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) == 0 else { throw failed }
        try rules { (name, action, conditions) throws(SystemError) in
            let number = seccomp_syscall_resolve_name(name)
            guard number >= 0 else { return }  // not a call on this architecture
            let rc = conditions.withUnsafeBufferPointer {
                seccomp_rule_add_array(ctx, action, number, UInt32($0.count), $0.baseAddress)
            }
            guard rc == 0 else { throw SystemError(.syscall, "sandbox: cannot add the rule for \(name)", errno: Errno(rawValue: -rc)) }
        }
        guard seccomp_load(ctx) == 0 else { throw failed }
    }

    /// The SIGSYS handler, with the call names it reports (libseccomp's table, read now: the
    /// handler cannot allocate). The names and prefix live as long as the process.
    private static func installTrapReporter(program: String) throws(SystemError) {
        let count: Int32 = 512
        let names = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: Int(count))
        for number in 0..<count {
            names[Int(number)] = seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), number).map { UnsafePointer($0) }
        }
        let prefix = strdup("\(program): ")
        // SAFETY: `names` (count entries, each NULL or a C string from libseccomp) and `prefix`
        // are never freed, so the handler may read them at any time from any thread.
        _ = try syscall("sigaction(SIGSYS)") { clx_sandbox_trap_install(prefix, names, count) }
    }
}
