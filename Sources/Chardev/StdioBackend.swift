import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-chardev stdio`, `-serial stdio`, and the terminal under `-nographic`: input from stdin,
/// output to stdout.
///
/// When the input is a terminal it is switched to QEMU's raw mode (char-stdio.c: no echo,
/// no line editing or input translation; output processing kept, so the guest's own "\r\n"
/// shows unchanged). The original settings come back on `close()`, `restoreTerminal()`, at
/// exit, on SIGINT/SIGTERM/SIGHUP/SIGQUIT and on crashes (fatalError traps), through
/// handlers in CLinux (a signal handler may only do async-signal-safe work); SIGCONT after a
/// Ctrl-Z makes the terminal raw again. `signal` keeps ISIG as QEMU's `signal=on` does: Ctrl-C
/// kills swemu. With `signal=off` (what `mon:stdio`/`-nographic` use) Ctrl-C goes to the guest.
///
/// Input stops at end of file (stdin closed or redirected from a file or /dev/null). Output
/// is a blocking write: stdout is the user's own terminal or file.
public final class StdioBackend: CharDriver {
    public let inputFD: Int32
    public let outputFD: Int32
    /// Whether the input terminal was put into raw mode (false for pipes and files).
    public let isRawTerminal: Bool
    public let allowsSignals: Bool

    private let slot = FrontendSlot()
    private let channel: StreamChannel
    private let output = Mutex(true)  // false once stdout failed or the backend closed
    private let closed = Atomic(false)

    /// Serialises terminal changes (CLinux's saved-settings table) and counts stdin users.
    private static let terminalLock = Mutex<Set<Int32>>([])

    /// - Parameters:
    ///   - input, output: descriptors, not owned (defaults: stdin, stdout); tests pass a pty.
    ///   - signal: keep Ctrl-C/Ctrl-\ raising signals in raw mode (`signal=on`).
    ///   - rawMode: switch a terminal input to raw mode (default: yes).
    public init(loop: EventLoop, input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO,
                signal: Bool = true, rawMode: Bool = true) throws(SystemError) {
        inputFD = input
        outputFD = output
        allowsSignals = signal
        let isTerminal = rawMode && isatty(input) == 1
        try Self.terminalLock.withLock { (inUse: inout Set<Int32>) throws(SystemError) in
            // QEMU: "cannot use stdio by multiple character devices" — two readers would
            // split the user's keystrokes between them.
            guard !inUse.contains(input) else {
                throw SystemError(.configuration, "stdio (fd \(input)) is already used by another chardev; share one with mux=on (mon:stdio)")
            }
            if isTerminal {
                _ = clx_term_install_handlers()
                if clx_term_enter_raw(input, signal ? 1 : 0) < 0 {
                    throw SystemError(.syscall, "cannot put the terminal on fd \(input) into raw mode", errno: .current)
                }
            }
            inUse.insert(input)
        }
        isRawTerminal = isTerminal
        // stdin EOF: the channel stops reading and the frontend hears `.closed`, as QEMU's
        // char-fd sends CHR_EVENT_CLOSED.
        let slot = slot
        channel = StreamChannel(fd: FileDescriptor(owning: input), owned: false, kind: .stream, loop: loop,
                                slot: slot, onHangup: { slot.closed() })
        // The user's terminal is there from the start: a frontend hears `.opened` at attach.
        slot.opened()
        do {
            try channel.start()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    public var label: String { "stdio" }

    public func attach(_ frontend: (any CharFrontend)?) {
        slot.set(frontend)
        if frontend != nil { channel.resumeInput() }
    }

    public func acceptInput() { channel.resumeInput() }

    public func write(_ bytes: [UInt8]) {
        if bytes.isEmpty { return }
        output.withLock { ok in
            // Serialised so one call's bytes stay together; a failed stdout stays failed.
            if ok { ok = writeAllBorrowed(outputFD, bytes) }
        }
    }

    /// Puts this backend's terminal back as it was (no-op if it is not raw). Input keeps
    /// flowing; call `close()` to stop it.
    public func restoreTerminalMode() {
        guard isRawTerminal else { return }
        Self.terminalLock.withLock { _ in _ = clx_term_restore(inputFD) }
    }

    /// Restores every terminal any stdio backend made raw: for the CLI's exit paths.
    /// Async-signal-unsafe (it takes a lock); signal handlers restore on their own.
    public static func restoreTerminal() {
        terminalLock.withLock { _ in _ = clx_term_restore(-1) }
    }

    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        channel.close()
        output.withLock { $0 = false }
        slot.closed()
        Self.terminalLock.withLock { inUse in
            if isRawTerminal { _ = clx_term_restore(inputFD) }
            inUse.remove(inputFD)
        }
    }
}
