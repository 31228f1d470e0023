import Glibc

/// Test-only: makes a process SIGKILL itself at a named step of a multi-step
/// change to shared state, so an end-to-end test can check the repair after
/// a death at exactly that step, deterministically.
///
///     JOBRUN_TEST_KILL_AT=<step>[@<process name>]
///
/// The variable is read when the process makes its context
/// (ProcessContext.killAt; `load` reads it again, for a unit test's forked
/// child); forked workers inherit the setting. With
/// `@name`, only the process of that name dies. The steps are the
/// `killPoint` names in the code (e.g. "ring-grow-published" in
/// SharedQueue). Unset, a kill point costs one load and a compare.
enum TestHooks {
    struct KillAt {
        let step: String
        let who: String

        static func fromEnvironment(_ variable: String = "JOBRUN_TEST_KILL_AT") -> KillAt? {
            guard let v = getenv(variable) else { return nil }
            let text = String(cString: v)
            if text.isEmpty { return nil }
            if let at = text.firstIndex(of: "@") {
                return KillAt(step: String(text[..<at]), who: String(text[text.index(after: at)...]))
            }
            return KillAt(step: text, who: "")
        }
    }

    static func load() { ProcessContext.current.setKillAt(KillAt.fromEnvironment()) }

    /// Dies here if the test asked for this step.
    @inline(__always)
    static func killPoint(_ name: StaticString) {
        if ProcessContext.processHot.pointee.killArmed { reached(name) }
    }

    @inline(never)
    private static func reached(_ name: StaticString) {
        guard let at = ProcessContext.current.killAt, name.description == at.step, at.who.isEmpty || at.who == ProcessContext.current.identity.processName else { return }
        kill(getpid(), SIGKILL)
        while true { pause() }
    }

    /// Test-only, the same way: `JOBRUN_TEST_PAUSE_AT=<step>[@<process name>]`
    /// makes a process sleep half a second at a named step, so a test can
    /// land the others' moves inside a window that is otherwise rare (a
    /// race that only a loaded machine shows). It widens a window; it never
    /// synchronises a test. Read once, at the first pause point reached
    /// (forked workers inherit the environment); pause points sit on cold
    /// paths only (a verdict's wake and raise).
    private static let pauseAt = KillAt.fromEnvironment("JOBRUN_TEST_PAUSE_AT")

    static var pauseArmed: Bool { pauseAt != nil }

    static func pausePoint(_ name: StaticString) {
        guard let at = pauseAt, name.description == at.step,
              at.who.isEmpty || at.who == ProcessContext.current.identity.processName else { return }
        usleep(500_000)
    }
}
