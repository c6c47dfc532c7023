import Foundation

/// Runs a program (found on PATH through /usr/bin/env) to its end: its exit status and what
/// it wrote on stdout and stderr, kept apart (the image-tool tests compare both with
/// qemu-img's word for word).
@discardableResult
public func runProgram(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs the program at `path` to its end, bounded by `timeout` seconds (then SIGKILL: the
/// test runner starts children with most signals blocked, SIGTERM included): its exit status
/// and its stdout and stderr together. `environment` adds to the test's own.
public func runProgram(path: String, _ arguments: [String], timeout: Double = 120,
                       environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let (process, pipe, killer) = try startProgram(path: path, arguments, timeout: timeout, environment: environment)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Starts the program at `path` with stdin empty and stdout and stderr on one pipe, and arms
/// a SIGKILL for `timeout` seconds from now (cancel the work item once it has ended).
public func startProgram(path: String, _ arguments: [String], timeout: Double,
                         environment: [String: String] = [:]) throws -> (Process, Pipe, DispatchWorkItem) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let killer = DispatchWorkItem { kill(process.processIdentifier, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    return (process, pipe, killer)
}
