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

        static func fromEnvironment() -> KillAt? {
            guard let v = getenv("JOBRUN_TEST_KILL_AT") else { return nil }
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
}
