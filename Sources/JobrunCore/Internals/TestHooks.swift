import Glibc

/// Test-only: makes a process SIGKILL itself at a named step of a multi-step
/// change to shared state, so an end-to-end test can check the repair after
/// a death at exactly that step, deterministically.
///
///     JOBRUN_TEST_KILL_AT=<step>[@<process name>]
///
/// The variable is read once, when the process maps the arena (Arena.create,
/// Arena.attach); forked workers inherit the setting. With `@name`, only the
/// process of that name dies. The steps are the `killPoint` names in the
/// code (e.g. "ring-grow-published" in SharedQueue). Unset, a kill point
/// costs one load of a static flag.
enum TestHooks {
    private(set) static var armed = false
    private static var step = ""
    private static var who = ""

    static func load() {
        guard let v = getenv("JOBRUN_TEST_KILL_AT") else { return }
        let text = String(cString: v)
        if text.isEmpty { return }
        if let at = text.firstIndex(of: "@") {
            step = String(text[..<at])
            who = String(text[text.index(after: at)...])
        } else {
            step = text
        }
        armed = true
    }

    /// Dies here if the test asked for this step.
    @inline(__always)
    static func killPoint(_ name: StaticString) {
        if armed { reached(name) }
    }

    @inline(never)
    private static func reached(_ name: StaticString) {
        guard name.description == step, who.isEmpty || who == Runtime.processName else { return }
        kill(getpid(), SIGKILL)
        while true { pause() }
    }
}
