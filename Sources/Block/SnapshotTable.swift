import Glibc

/// QEMU's `size_to_str`: three significant digits in the largest fitting binary unit
/// ("3.01 MiB"), as qemu-img and the monitor print sizes.
package enum SizeText {
    package static func human(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var index = 0
        var value = Double(bytes)
        while index < units.count - 1 && value >= 1000 {
            value /= 1024
            index += 1
        }
        return "\(threeSignificant(value)) \(units[index])"
    }

    /// printf's `%-Ns` and `%Ns`.
    package static func padRight(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    package static func padLeft(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

    /// printf's `%0.3g` for 0 <= value < 1000.
    static func threeSignificant(_ value: Double) -> String {
        let decimals = value >= 100 ? 0 : value >= 10 ? 1 : 2
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        if rounded >= 1000 { return "1e+03" }
        var text = decimals == 0 ? String(Int(rounded)) : String(rounded)
        if decimals > 0 {
            let parts = text.split(separator: ".")
            var fraction = parts.count > 1 ? String(parts[1]) : ""
            fraction = String(fraction.prefix(decimals))
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text = fraction.isEmpty ? String(parts[0]) : "\(parts[0]).\(fraction)"
        }
        return text
    }
}

extension Qcow2Snapshot {
    /// The snapshot table as `qemu-img snapshot -l` and the monitor's `info snapshots` print it
    /// (QEMU's bdrv_snapshot_dump: "%-9s %-16s %8s%20s%13s%11s"); `ids` replaces the ID column
    /// (the monitor prints "--" for snapshots found on every disk).
    package static func table(_ snapshots: [Qcow2Snapshot], ids: [String]? = nil) -> String {
        var s = "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
        for (index, snap) in snapshots.enumerated() {
            var t = time_t(snap.dateSeconds)
            var tm = tm()
            localtime_r(&t, &tm)
            let date = "\(tm.tm_year + 1900)-\(pad2(tm.tm_mon + 1))-\(pad2(tm.tm_mday)) \(pad2(tm.tm_hour)):\(pad2(tm.tm_min)):\(pad2(tm.tm_sec))"
            let ns = snap.vmClockNanoseconds
            let secs = ns / 1_000_000_000
            let clock = "\(pad2(Int32(secs / 3600))):\(pad2(Int32(secs / 60 % 60))):\(pad2(Int32(secs % 60))).\(pad3(Int(ns / 1_000_000 % 1000)))"
            // VM SIZE from vm_state_size_large; ICOUNT empty when the snapshot has none, as QEMU.
            s += padRight(ids?[index] ?? snap.id, 9) + " " + padRight(snap.name, 16) + " " + padLeft(SizeText.human(snap.vmStateBytes), 8)
                + padLeft(date, 20) + padLeft(clock, 13) + padLeft(snap.icount.map(String.init) ?? "", 11) + "\n"
        }
        return s
    }

    static func pad2(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    static func pad3(_ v: Int) -> String { String(repeating: "0", count: max(0, 3 - String(v).count)) + String(v) }
    static func padRight(_ s: String, _ n: Int) -> String { SizeText.padRight(s, n) }
    static func padLeft(_ s: String, _ n: Int) -> String { SizeText.padLeft(s, n) }
}
