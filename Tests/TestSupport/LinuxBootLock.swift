import Testing

/// At most one Linux guest boot at a time in the whole test process.
///
/// A Linux boot keeps a core busy for minutes under the interpreter or the JIT. The suites that
/// boot Linux are `.serialized` within themselves, but Swift Testing runs suites (and the test
/// modules) in parallel with each other: two boots at once on a 2-core machine double each
/// one's time and push them past their timeouts. Every such suite takes this trait
/// (`@Suite(.serialized, .oneLinuxBootAtATime)`); each of its test cases then waits its turn
/// without holding a thread, so the other tests keep running meanwhile.
public struct OneLinuxBootAtATime: TestTrait, SuiteTrait, TestScoping {
    /// Applied to a suite, the trait reaches every test in it.
    public var isRecursive: Bool { true }

    /// One turn per test case rather than per suite, so another suite's boot can run between
    /// two of ours instead of waiting for the whole suite.
    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        testCase == nil ? nil : self
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        await LinuxBootTurns.shared.acquire()
        do {
            try await function()
        } catch {
            await LinuxBootTurns.shared.release()
            throw error
        }
        await LinuxBootTurns.shared.release()
    }
}

extension Trait where Self == OneLinuxBootAtATime {
    /// At most one Linux guest boot at a time in the test process (see `OneLinuxBootAtATime`).
    public static var oneLinuxBootAtATime: Self { Self() }
}

/// The turns: a first-come, first-served lock that suspends waiters instead of blocking them.
actor LinuxBootTurns {
    static let shared = LinuxBootTurns()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the turn to the next waiter (the lock stays taken), or frees it.
    func release() {
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
