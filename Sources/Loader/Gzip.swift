import CZlib
import SystemSupport

/// gzip (RFC 1952) decompression through zlib, for `-kernel Image.gz` as QEMU accepts it.
/// The input is untrusted: corrupt data is a clear error, and the output is capped so a
/// "gzip bomb" cannot exhaust host memory.
public enum Gzip {
    public static func isGzip(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b }

    /// Decompresses `bytes`, refusing output larger than `limit`.
    public static func decompress(_ bytes: [UInt8], name: String, limit: Int = 256 << 20) throws(SystemError) -> [UInt8] {
        var stream = z_stream()
        // 15 + 32: a zlib or gzip header, detected automatically.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .badInput("\(name): cannot start gzip decompression")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var input = bytes
        let status: Int32 = input.withUnsafeMutableBufferPointer { inputBuffer in
            stream.next_in = inputBuffer.baseAddress
            stream.avail_in = UInt32(inputBuffer.count)
            while true {
                let result: Int32 = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk.count - Int(stream.avail_out)
                if output.count + produced > limit { return Z_MEM_ERROR }
                output += chunk[0..<produced]
                if result == Z_STREAM_END { return Z_OK }
                if result != Z_OK { return result }
                if produced == 0 && stream.avail_in == 0 { return Z_BUF_ERROR }
            }
        }
        switch status {
        case Z_OK: return output
        case Z_MEM_ERROR: throw .badInput("\(name): decompresses to more than \(limit >> 20) MiB")
        case Z_BUF_ERROR: throw .badInput("\(name): gzip data is truncated")
        default: throw .badInput("\(name): gzip data is corrupt (zlib error \(status))")
        }
    }
}
