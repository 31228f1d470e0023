import Foundation
import Testing

/// The Promela model of the whole JoinableQueue protocol
/// (docs/model/joinable_queue.pml) checked exhaustively by spin: every
/// interleaving of a producer, two consumers, the joiner and the monitor,
/// with a SIGKILL before any step; and task_done_tail.pml, a known defect.
@Suite("The queue protocol's model (joinable_queue.pml)")
struct QueueModelTests {
    /// Runs spin's exhaustive safety check of docs/model/joinable_queue.pml
    /// with `defines` in a temporary folder; returns pan's report.
    static func check(_ defines: [String], timeout: Double = 300) -> (passed: Bool, report: String) {
        let dir = ScratchFolder(prefix: "jobrun-model")
        defer { dir.remove() }
        do {
            for f in ["joinable_queue.pml", "taken.pml"] { try dir.copy(packageRoot.appendingPathComponent("docs/model/\(f)")) }
        } catch {
            return (false, "cannot prepare \(dir.path): \(error)")
        }
        // -DSAFETY: assertions and invalid end states; -DCOLLAPSE: exact
        // state storage in less memory; MEMLIM bounds it (MB).
        let script = """
            command -v spin >/dev/null || { echo "spin is not installed (scripts/setup installs it)"; exit 2; }
            spin -a \(defines.joined(separator: " ")) joinable_queue.pml >spin.out 2>&1 || { cat spin.out; exit 2; }
            cc -O2 -DSAFETY -DCOLLAPSE -DMEMLIM=2048 -o pan pan.c 2>&1 || exit 2
            ./pan -m1000000 -w24 2>&1
            if [ -f joinable_queue.pml.trail ]; then
                echo "--- trail (spin -t -p):"
                spin -t -p \(defines.joined(separator: " ")) joinable_queue.pml 2>&1 | grep -E 'proc|assert|Error' | tail -60
            fi
            """
        let r = runJobrun(["-c", script], timeout: timeout, cwd: dir.path, executable: "/bin/sh")
        let report = r.stdout + r.stderr
        let passed = !r.timedOut && r.status == 0 && report.contains("errors: 0")
            && !report.contains("Search not completed") && !report.contains("max search depth too small")
            && !report.contains("out of memory")
        return (passed, r.timedOut ? "timed out after \(timeout) s\n" + report : report)
    }

    /// The protocol with a SIGKILL allowed before every step: no item lost
    /// or done twice, join never early and never stuck, counts exact.
    @Test func protocolHoldsWhereverAProducerOrConsumerDies() {
        let r = Self.check([])
        #expect(r.passed, "\(r.report)")
    }

    /// docs/model/task_done_tail.pml: task_done by another process than the
    /// taker, of its only kept copy, with a death at any step.
    @Test func taskDoneOfAnotherTakersOnlyItem() {
        let dir = ScratchFolder(prefix: "jobrun-model")
        defer { dir.remove() }
        let model = packageRoot.appendingPathComponent("docs/model/task_done_tail.pml").path
        let r = runJobrun(["-c", "spin -a '\(model)' >/dev/null && cc -O2 -o pan pan.c && ./pan -a"],
                          timeout: 120, cwd: dir.path, executable: "/bin/sh")
        #expect(!r.timedOut && r.status == 0 && r.stdout.contains("errors: 0"), "\(r.stdout)\(r.stderr)")
    }

    /// task_done_tail.pml end to end: a process that took nothing marks the
    /// taker's only item done and is killed between unlinking its kept copy
    /// and clearing the taker's tail (kill point "task-done-unlinked"). The
    /// taker then gets a second item and is killed: that item must be
    /// delivered again and join must return, with nothing failed.
    @Test func taskDoneKilledBetweenHeadAndTailOfAnotherTakersList() {
        let r = runScript("""
            local q = jobrun.JoinableQueue{redeliver = true}
            local got = jobrun.Queue()
            q:put("one")
            local taker = jobrun.Process{name = "taker", target = function()
              got:put(q:get()); got:put(q:get()); jobrun.sleep(60)
            end}
            taker:start()
            print(got:get(true, 10))
            local marker = jobrun.Process{name = "marker", target = function() q:task_done() end}
            marker:start(); marker:join()
            q:put("two")
            print(got:get(true, 10))
            taker:kill(); taker:join()
            local c = jobrun.Process{name = "consumer", daemon = true, target = function()
              for v in q:items() do got:put(v) end
            end}
            c:start()
            local ok, v = pcall(got.get, got, true, 10)
            local joined, e = pcall(q.join, q, 10)
            print(marker.exitcode, ok and v, joined and e or e.kind)
            """, environment: ["JOBRUN_TEST_KILL_AT": "task-done-unlinked@marker"], timeout: 60)
        #expect(!r.timedOut)
        expectLines(r, [
            "the taker got the first item": "one",
            "and the second after the marker's task_done": "two",
            "the marker was killed; the second item came again and join returned": "-9\ttwo\ttrue",
        ])
    }
}
