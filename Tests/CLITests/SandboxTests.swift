import Foundation
import Glibc
import Testing
@testable import CLI
import TestSupport

/// `-sandbox`'s filter in a real process: this test binary runs itself again with only
/// `sandboxedChild` enabled, which installs the filter swemu installs and then makes one call.
/// (The Linux boot under the filter, every device and a reset: MachinesTests/SandboxMachineTests.)
@Suite struct SandboxTests {
    static let childVariable = "SWEMU_SANDBOX_TEST_CHILD"
    static let childCall = ProcessInfo.processInfo.environment[childVariable]

    /// The child's side; skipped in a normal run.
    @Test(.enabled(if: childCall != nil, "runs only as the child process of SandboxTests.forbiddenCallsEndTheProcess"))
    func sandboxedChild() throws {
        let policy = try #require(try SandboxPolicy.parse("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                                                          option: "-sandbox"))
        try policy.install(program: "sandbox-child")
        // The test thread inherited the runner's blocked signals; the report needs SIGSYS.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGSYS)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        FileHandle.standardError.write("FILTER-INSTALLED\n".data(using: .utf8)!)
        switch Self.childCall {
        case "execve":
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
            execv("/bin/true", argv)
        case "mount":
            // Harmless even unfiltered: the target does not exist.
            _ = mount("none", "/nonexistent-swemu-sandbox-test", "tmpfs", 0, nil)
        case "setpriority":
            // resourcecontrol=deny: EPERM, not the end (glibc probes these).
            let rc = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 5)
            FileHandle.standardError.write("SETPRIORITY=\(rc) ERRNO=\(errno)\n".data(using: .utf8)!)
        default:
            // Allowed calls go on: files, threads, time.
            let fd = open("/dev/null", O_RDONLY)
            let thread = Thread { FileHandle.standardError.write("THREAD-RAN\n".data(using: .utf8)!) }
            thread.start()
            usleep(200_000)
            FileHandle.standardError.write("STILL-ALIVE fd=\(fd)\n".data(using: .utf8)!)
        }
    }

    func runChild(_ call: String) throws -> (status: Int32, output: String) {
        let me = try #require(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        return try runProgram(path: me, ["--testing-library", "swift-testing", "--filter", "SandboxTests/sandboxedChild"],
                              timeout: 60, environment: [Self.childVariable: call])
    }

    @Test(.enabled(if: childCall == nil, "this is the child process"))
    func forbiddenCallsEndTheProcess() throws {
        // spawn=deny: execve ends the process by SIGSYS, the call named.
        let exec = try runChild("execve")
        #expect(exec.output.contains("FILTER-INSTALLED"), "\(exec.output)")
        #expect(exec.status == SIGSYS, "status \(exec.status): \(exec.output)")
        #expect(exec.output.contains("sandbox-child: sandbox: system call execve (59) is not allowed by -sandbox"), "\(exec.output)")
        // Outside the allowlist, whatever the options: the same end.
        let mounted = try runChild("mount")
        #expect(mounted.status == SIGSYS, "status \(mounted.status): \(mounted.output)")
        #expect(mounted.output.contains("system call mount (165) is not allowed"), "\(mounted.output)")
        // resourcecontrol=deny: EPERM, and the process goes on.
        let priority = try runChild("setpriority")
        #expect(priority.status == 0 && priority.output.contains("SETPRIORITY=-1 ERRNO=\(EPERM)"), "\(priority.output)")
        // What swemu does once running still works, threads included (clone3 falls back).
        let alive = try runChild("allowed")
        #expect(alive.status == 0, "status \(alive.status): \(alive.output)")
        #expect(alive.output.contains("THREAD-RAN") && alive.output.contains("STILL-ALIVE fd="), "\(alive.output)")
    }
}
