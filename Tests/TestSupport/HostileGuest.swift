import Foundation

/// What the hostile guest programs (Tests/GuestPrograms/riscv/hostile/hostile.S and
/// x86_64/hostile.S) read from their disk: the seed of their random generator in the first
/// 8 bytes, the magic "HOSTILE!" in the next 8, and in the rest of sectors 0-7 the 64-bit words
/// i * 0x9e3779b97f4a7c15 (i = 2...511), which they read back after their resets and abuse.
public enum HostileGuest {
    /// `SWEMU_HOSTILE_SEED` (hex, with or without 0x) replays a run; otherwise a new seed.
    public static func seed() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["SWEMU_HOSTILE_SEED"],
           let value = UInt64(text.hasPrefix("0x") ? String(text.dropFirst(2)) : text, radix: 16) {
            return value
        }
        return UInt64.random(in: 1...UInt64.max)
    }

    /// Writes a 1 MiB raw disk for `seed` at `path`.
    public static func writeDisk(seed: UInt64, to path: String) throws {
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        func put(_ value: UInt64, word: Int) {
            for b in 0..<8 { bytes[word * 8 + b] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(b))) }
        }
        put(seed, word: 0)
        put(0x2145_4c49_5453_4f48, word: 1)
        for i in 2..<512 { put(UInt64(i) &* 0x9e37_79b9_7f4a_7c15, word: i) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// The same device of every virtio type on the command line, the disk first: virtio-blk,
    /// -net (user networking with restrict=on: the guest's frames reach no network), -console
    /// (on a null chardev), -rng, -balloon and -keyboard.
    public static func devices(disk: String) -> [String] {
        ["-drive", "file=\(disk),format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
         "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0",
         "-chardev", "null,id=vc", "-device", "virtio-serial-device", "-device", "virtconsole,chardev=vc",
         "-device", "virtio-rng-device", "-device", "virtio-balloon-device", "-device", "virtio-keyboard-device"]
    }
}
