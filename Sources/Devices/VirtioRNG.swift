import DeviceModel
import Glibc
import SystemSupport
import VirtIO

/// virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue whose device-writable
/// buffers the device fills with random bytes. No features, no configuration space.
///
/// The bytes come from an entropy source, by default the host kernel's `getrandom(2)` (QEMU's
/// `rng-builtin`); tests inject their own. Requests complete on the notifying vCPU thread:
/// `getrandom` from the initialised pool does not block.
package final class VirtioRNG: VirtioDevice {
    /// Fills the whole buffer with random bytes, or throws.
    package typealias EntropySource = @Sendable (UnsafeMutableRawBufferPointer) throws(SystemError) -> Void

    /// The request queue's size.
    package static let queueSize: UInt16 = 64
    /// The most bytes given for one request; the driver asks again for more (§5.4.6: the
    /// device may fill fewer bytes than the buffers hold).
    package static let maxBytesPerRequest = 64 * 1024

    private let entropy: EntropySource

    package init(entropy: @escaping EntropySource = VirtioRNG.hostRandom) {
        self.entropy = entropy
    }

    package var deviceID: VirtioDeviceID { .entropy }
    package var deviceFeatures: VirtioFeatures { [] }
    package var queueMaxSizes: [UInt16] { [VirtioRNG.queueSize] }
    package func configSpace() -> [UInt8] { [] }
    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {}
    package func reset() {}

    package func process(queue: Int, transport: any VirtioTransport) {
        guard queue == 0 else { return }
        while let chain = transport.popAvailable(queue: 0) {
            // Device-readable buffers carry nothing for this device and are ignored.
            let count = min(chain.writableLength, VirtioRNG.maxBytesPerRequest)
            var written = 0
            do {
                try chain.forEachWritableSegment(offset: 0, count: count) { buffer in
                    try entropy(buffer)
                    written += buffer.count
                }
            } catch {
                // The host gave no entropy: report what was filled (possibly nothing); the
                // driver asks again.
                DebugLog.log(.guestErrors, "virtio-rng: entropy source failed: \(error)")
            }
            transport.pushUsed(chain, written: written)
        }
        transport.notifyIfNeeded(queue: 0)
    }

    /// `getrandom(2)` from the kernel's pool (urandom semantics), retried on EINTR and short
    /// returns.
    package static let hostRandom: EntropySource = { (buffer: UnsafeMutableRawBufferPointer) throws(SystemError) in
        guard let base = buffer.baseAddress else { return }
        guard let getrandom = HostGetrandom.function else {
            throw .unsupported("getrandom(2) is not available in this C library")
        }
        var done = 0
        while done < buffer.count {
            let n = try syscall("getrandom of \(buffer.count - done) bytes failed") {
                getrandom(base + done, buffer.count - done, 0)
            }
            done += n
        }
    }
}

/// glibc's `getrandom`, looked up by name: the Swift `Glibc` module does not import
/// `<sys/random.h>`, and `Devices` takes no C target of its own (DESIGN.md §2).
private enum HostGetrandom {
    /// `ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)` on LP64.
    typealias Function = @convention(c) (UnsafeMutableRawPointer?, Int, UInt32) -> Int

    static let function: Function? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "getrandom") else { return nil }
        // SAFETY: the symbol is glibc's getrandom (glibc ≥ 2.25), whose C prototype `Function` spells out.
        return unsafeBitCast(symbol, to: Function.self)
    }()
}
