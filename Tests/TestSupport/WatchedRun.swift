import Foundation
import Synchronization

/// How a program run under `runWatchingMemory` ended, and the most memory it held.
public struct WatchedRun: Sendable {
    /// The exit status, or the signal number when `signal` is set.
    public var status: Int32
    /// The signal that ended the program (SIGKILL after `timedOut` or `killedForMemory`), nil
    /// when it exited.
    public var signal: Int32?
    /// The deadline passed and the program was killed.
    public var timedOut: Bool
    /// The program passed its memory limit and was killed.
    public var killedForMemory: Bool
    /// stdout and stderr together.
    public var output: String
    /// The program's peak resident set (VmHWM of /proc/PID/status, in KiB), as last read before
    /// it ended: the kernel keeps the high-water mark, so a spike between two readings counts.
    public var peakResidentKiB: Int

    /// One line for a failure message: how it ended and the last `tail` bytes of its output.
    public func summary(tail: Int = 1500) -> String {
        let end = timedOut ? "killed at the deadline" : killedForMemory ? "killed above its memory limit"
            : signal.map { "killed by signal \($0)" } ?? "exit status \(status)"
        return "\(end), peak resident \(peakResidentKiB) KiB; output ends: \(String(output.suffix(tail)))"
    }
}

/// Runs the program at `path` to its end, bounded by `timeout` seconds and `memoryLimitKiB` of
/// resident memory (then SIGKILL: a runaway must not take the host's memory down with it),
/// reading its VmHWM every 10 ms. For tests that bound what a process may take from its host
/// (the hostile-guest tests).
public func runWatchingMemory(path: String, _ arguments: [String], timeout: Double, memoryLimitKiB: Int) throws -> WatchedRun {
    // startProgram's own kill timer is only the backstop: the loop below kills at the deadline
    // itself, to tell a timeout from a crash.
    let (process, pipe, backstop) = try startProgram(path: path, arguments, timeout: timeout + 30)
    defer { backstop.cancel() }
    // The output is drained on its own thread: a program blocked on a full pipe would look hung.
    let output = Mutex<Data>(Data())
    let drained = DispatchSemaphore(value: 0)
    Thread {
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        output.withLock { $0 = data }
        drained.signal()
    }.start()
    let statusFile = "/proc/\(process.processIdentifier)/status"
    let deadline = Date().addingTimeInterval(timeout)
    var peak = 0
    var timedOut = false
    var killedForMemory = false
    while process.isRunning {
        // Gone (or a zombie, whose status has no Vm lines) once it ends: the last reading stands.
        if let text = try? String(contentsOfFile: statusFile, encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
            peak = max(peak, kib)
        }
        if peak > memoryLimitKiB {
            killedForMemory = true
            kill(process.processIdentifier, SIGKILL)
            break
        }
        if Date() > deadline {
            timedOut = true
            kill(process.processIdentifier, SIGKILL)
            break
        }
        Thread.sleep(forTimeInterval: 0.01)
    }
    process.waitUntilExit()
    drained.wait()
    let signalled = process.terminationReason == .uncaughtSignal
    return WatchedRun(status: process.terminationStatus, signal: signalled ? process.terminationStatus : nil,
                      timedOut: timedOut, killedForMemory: killedForMemory, output: String(decoding: output.withLock { $0 }, as: UTF8.self),
                      peakResidentKiB: peak)
}

/// A well-behaved program (a second VM) run again and again on a thread of its own from `init`
/// until `stop()`, each run bounded by `timeout` seconds: the hostile-guest tests check that
/// what one VM does leaves another, beside it on the same host, untouched.
public final class RepeatedRun: Sendable {
    private let runs = Mutex<[(status: Int32, output: String)]>([])
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    public init(path: String, _ arguments: [String], timeout: Double) {
        Thread { [self] in
            repeat {
                let run: (status: Int32, output: String)
                do {
                    run = try runProgram(path: path, arguments, timeout: timeout)
                } catch {
                    run = (-1, "could not start \(path): \(error)")
                }
                runs.withLock { $0.append(run) }
            } while !stopping.load(ordering: .sequentiallyConsistent)
            finished.signal()
        }.start()
    }

    /// Lets the run in progress finish, then returns every run's exit status and output.
    public func stop() -> [(status: Int32, output: String)] {
        stopping.store(true, ordering: .sequentiallyConsistent)
        finished.wait()
        return runs.withLock { $0 }
    }
}
