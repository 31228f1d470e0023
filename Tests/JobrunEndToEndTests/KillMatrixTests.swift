import Foundation
import Testing

/// SIGKILL and SIGSTOP at random moments: a bounded run of the kill matrix
/// (scripts/killtest runs hundreds of trials), and the two windows the
/// queue protocol's model found in the code before the queue kept its
/// takers (docs/model/README.md), shown end to end.
@Suite("Kill matrix")
struct KillMatrixTests {
    /// One trial of each case: consumer, producer, main process or monitor;
    /// SIGKILL or SIGSTOP then SIGCONT; with and without redelivery.
    @Test func everyCaseOnce() {
        let r = runJobrun(["python3", "scripts/kill-matrix.py", "--bin", jobrunBinary, "--trials", "16", "--items", "6000",
                           "--timeout", "60"], timeout: 200, executable: "/usr/bin/env")
        #expect(!r.timedOut)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("16 trials"))
    }

    /// A victim that only puts (at most 2,000 small items: the ring never
    /// grows, a kill while it grows being another defect) is SIGKILLed again
    /// and again; after each kill the main process takes every item left and
    /// marks it done. Each get is matched by one task_done, so none may be
    /// refused, and the drained queue must join.
    static let putWindow = """
        local seconds = tonumber(arg[1])
        math.randomseed(os.time())
        local q = jobrun.JoinableQueue()
        local kills, refused, unjoined = 0, 0, 0
        local t0 = jobrun.time()
        while jobrun.time() - t0 < seconds and refused + unjoined == 0 do
          local p = jobrun.Process{name = "victim", target = function() for i = 1, 2000 do q:put(i) end end}
          p:start()
          jobrun.sleep(0.0005 + math.random() * 0.0025)   -- a random moment to kill at
          p:kill(); p:join()
          kills = kills + 1
          while pcall(q.get, q, false) do
            if not pcall(q.task_done, q) then refused = refused + 1 end
          end
          if not q:join(0) then unjoined = unjoined + 1 end
        end
        print(("kills %d refused %d unjoined %d"):format(kills, refused, unjoined))
        """

    /// A victim that only gets and marks done is SIGKILLed again and again
    /// while the main process keeps the queue fed; at the end the main
    /// process takes every item left and marks it done. No task_done may be
    /// refused (a victim that sees one exits with 7), and the queue must join.
    static let doneWindow = """
        local seconds = tonumber(arg[1])
        math.randomseed(os.time())
        local q = jobrun.JoinableQueue{redeliver = true}
        local kills, refused, unjoined = 0, 0, 0
        local function take()
          local ok = pcall(q.get, q, true, 0.01)
          if ok and not pcall(q.task_done, q) then refused = refused + 1 end
          return ok
        end
        local t0 = jobrun.time()
        while jobrun.time() - t0 < seconds and refused == 0 do
          if q:qsize() < 1000 then for i = 1, 2000 do q:put(i) end end
          local p = jobrun.Process{name = "victim", target = function()
            if not pcall(function() for _ in q:items() do end end) then os.exit(7) end
          end}
          p:start()
          jobrun.sleep(0.001 + math.random() * 0.004)   -- a random moment to kill at
          p:kill(); p:join()
          kills = kills + 1
          if p.exitcode == 7 then refused = refused + 1 end
        end
        local since = jobrun.time()
        while refused == 0 do
          if not take() then
            if q:join(0) then break end
            if jobrun.time() - since > 10 then unjoined = 1; break end
          end
        end
        print(("kills %d refused %d unjoined %d"):format(kills, refused, unjoined))
        """

    static func window(_ script: String) -> (refused: Bool, output: String) {
        let r = runScript(script, args: ["6"], timeout: 60)
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return (r.timedOut || r.status != 0 || !line.hasSuffix("refused 0 unjoined 0"), "\(r.stdout)\(r.stderr)")
    }

    /// docs/model/README.md, finding 1 (SharedQueue.enqueue): before put
    /// wrote its intent, `tail` moved before `unfinished` rose, and this
    /// refused a task_done within a few hundred kills.
    @Test func producerKilledInsidePutNeverMakesTheCountShort() {
        let r = Self.window(Self.putWindow)
        #expect(!r.refused, "\(r.output)")
    }

    /// docs/model/README.md, finding 2 (SharedQueue.taskDone): before
    /// task_done ran under the lock with its intent, `unfinished` fell before
    /// the stage said so, the monitor redelivered a done item, and this
    /// refused a task_done within a few hundred kills.
    @Test func consumerKilledInsideTaskDoneNeverHasItsItemRedelivered() {
        let r = Self.window(Self.doneWindow)
        #expect(!r.refused, "\(r.output)")
    }
}
