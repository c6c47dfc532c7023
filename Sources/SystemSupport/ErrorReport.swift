import Glibc
import Synchronization

/// QEMU's error_report (util/qemu-error.c): a message for the user on stderr as one line,
/// "PROGRAM: message", with the time in front under `-msg timestamp=on`
/// ("2026-12-07T03:14:08.825123Z ", UTC, microseconds, as QEMU's g_date_time_format_iso8601)
/// and the guest's name under `-msg guest-name=on` (libvirt turns the timestamps on to tell
/// its log's lines apart).
public enum ErrorReport {
    private struct Settings {
        var program = "swemu"
        var timestamp = false
        var guestName: String?
    }
    private static let settings = Mutex(Settings())

    /// Set once the command line is read; messages before that have no timestamp.
    public static func configure(program: String, timestamp: Bool, guestName: String?) {
        settings.withLock { $0 = Settings(program: program, timestamp: timestamp, guestName: guestName) }
    }

    /// The line `report` writes, with its newline (`lineEnd` "\r\n" while the terminal is raw).
    public static func line(_ message: String, lineEnd: String = "\n") -> String {
        let s = settings.withLock { $0 }
        var prefix = s.timestamp ? timestamp() + " " : ""
        if let name = s.guestName { prefix += name + " " }
        return prefix + s.program + ": " + message + lineEnd
    }

    public static func report(_ message: String, lineEnd: String = "\n") {
        let text = line(message, lineEnd: lineEnd)
        text.utf8CString.withUnsafeBufferPointer { buffer in
            var offset = 0
            let count = buffer.count - 1
            while offset < count {
                let n = Glibc.write(2, buffer.baseAddress! + offset, count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return }
                offset += n
            }
        }
    }

    /// Now as ISO 8601 in UTC with microseconds: 2026-12-07T03:14:08.825123Z.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let micros = String(now.tv_nsec / 1000)
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))."
            + String(repeating: "0", count: 6 - micros.count) + micros + "Z"
    }
}
