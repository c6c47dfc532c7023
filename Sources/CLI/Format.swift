/// Formats a byte count as QEMU does in messages ("128 MiB", "1.5 GiB").
func formatSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var index = 0
    while value >= 1024 && index < units.count - 1 {
        value /= 1024
        index += 1
    }
    if value == value.rounded() { return "\(Int(value)) \(units[index])" }
    let rounded = (value * 10).rounded() / 10
    return "\(rounded) \(units[index])"
}
