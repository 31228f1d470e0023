import Foundation
import Testing

/// Rows checked by `expectClearOutcome` (BadInput and the check live in
/// Support/Jobrun.swift; CrashTests.swift has rows of its own).
let badInputs: [BadInput] = [
    .init(name: "syntax error", script: "local x = = 1", status: 1, expect: "main.lua:1:"),
    .init(name: "runtime error", script: "local t = nil; print(t.x)", status: 1, expect: "attempt to index a nil value"),
    .init(name: "error with a table value", script: "error({code = 5})", status: 1, expect: "(error object is a table value)"),
    .init(name: "coroutine item", script: "jobrun.Queue():put(coroutine.create(print))", status: 1, expect: "jobrun.TypeError: Queue#1.put: item: cannot send a coroutine"),
    .init(name: "nested coroutine", script: "jobrun.Queue():put({a = {b = {coroutine.create(print)}}})", status: 1, expect: "item.a.b[1]: cannot send a coroutine"),
    .init(name: "foreign userdata", script: "jobrun.Queue():put({f = io.stdout})", status: 1, expect: "item.f: cannot send a userdata (FILE*)"),
    .init(name: "non-standard C function", script: "jobrun.Queue():put(jobrun.sleep)", status: 1, expect: "cannot send a C function"),
    .init(name: "function with an unsendable upvalue", script: "local co = coroutine.create(print); jobrun.Queue():put(function() return co end)", status: 1, expect: "upvalue co"),
    .init(name: "table nested 10,000 deep", script: "local t = {}; local c = t; for i = 1, 10000 do c.n = {}; c = c.n end; jobrun.Queue():put(t)", status: 1, expect: "nested too deeply"),
    .init(name: "cyclic table", script: "local t = {}; t.me = t; local q = jobrun.Queue(); q:put(t); local u = q:get(); print(u.me == u)", status: 0, expect: "true"),
    .init(name: "100 MiB string", script: "local q = jobrun.Queue(); q:put(string.rep('x', 100 * 1024 * 1024)); print(#q:get())", status: 0, expect: "104857600"),
    .init(name: "NaN timeout", script: "jobrun.Queue():get(true, 0/0)", status: 1, expect: "main.lua:1: jobrun.ValueError: Queue#1.get: timeout must be a number of seconds, got "),
    .init(name: "timeout of 1e300", script: "print(jobrun.Lock():acquire(true, 1e300), jobrun.Queue():get(false, 1e300) == nil)", status: 1, expect: "jobrun.Empty"),
    .init(name: "negative sleep", script: "jobrun.sleep(-1)", status: 1, expect: "jobrun.ValueError: sleep: seconds must be a non-negative number, got -1"),
    .init(name: "name too long", script: "jobrun.Lock{name = string.rep('x', 48)}", status: 1, expect: "Lock: name must be a non-empty string of at most 47 bytes, got a string of 48 bytes"),
    .init(name: "options table whose __index raises", script: "local t = setmetatable({}, {__index = function(_, k) error('boom ' .. k) end}); print(jobrun.Queue(t), jobrun.Lock(t))", status: 0, expect: "Queue#1 (0 items)\tLock#2 (unlocked)"),
    .init(name: "name of the wrong type", script: "jobrun.Event{name = 3}", status: 1, expect: "Event: name must be a non-empty string of at most 47 bytes, got number"),
    .init(name: "negative timeout means 0", script: "jobrun.Queue():get(true, -1)", status: 1, expect: "jobrun.Empty: Queue#1 is empty"),
    .init(name: "timeout of the wrong type", script: "jobrun.Queue():get(true, 'soon')", status: 1, expect: "jobrun.TypeError: Queue#1.get: timeout must be a number, got string"),
    .init(name: "block of the wrong type", script: "jobrun.Queue():put(1, 'yes')", status: 1, expect: "block must be a boolean, got string"),
    .init(name: "put without an item", script: "jobrun.Queue():put()", status: 1, expect: "missing item"),
    .init(name: "method called with a dot", script: "local q = jobrun.Queue(); q.get()", status: 1, expect: "expected a Queue as self"),
    .init(name: "task_done too often", script: "jobrun.JoinableQueue():task_done()", status: 1, expect: "task_done() called too many times"),
    .init(name: "put after close", script: "local q = jobrun.Queue(); q:close(); q:put(1)", status: 1, expect: "jobrun.Closed"),
    .init(name: "get after close and drain", script: "local q = jobrun.Queue(); q:put(1); q:close(); q:get(); q:get()", status: 1, expect: "closed and drained"),
    .init(name: "maxsize of the wrong type", script: "jobrun.Queue('big')", status: 1, expect: "maxsize must be an integer"),
    .init(name: "process started twice", script: "local p = jobrun.Process{target = function() end}; p:start(); p:start()", status: 1, expect: "jobrun.ProcessError"),
    .init(name: "process without target", script: "jobrun.Process{}", status: 1, expect: "needs target (a function) or script"),
    .init(name: "process target not a function", script: "jobrun.Process{target = 42}", status: 1, expect: "target must be a function, got number"),
    .init(name: "missing worker script", script: "jobrun.Process{script = 'nope.lua'}:start()", status: 1, expect: "cannot open script"),
    .init(name: "join with a NaN timeout", script: "local p = jobrun.Process{target = function() end}; p:start(); p:join(0/0)", status: 1, expect: "main.lua:1: jobrun.ValueError: join: timeout must be a number of seconds"),
    .init(name: "daemon set after start", script: "local p = jobrun.Process{target = function() end}; p:start(); p.daemon = true", status: 1, expect: "cannot set daemon after start"),
    .init(name: "release of an unlocked Lock", script: "jobrun.Lock():release()", status: 1, expect: "the lock is not held"),
    .init(name: "RLock released by another process", script: "local l = jobrun.RLock(); l:acquire(); local p = jobrun.Process{target = function() l:release() end}; p:start(); p:join(); print(p.exitcode)", status: 0, expect: "cannot release an RLock held by another process"),
    .init(name: "BoundedSemaphore released too often", script: "jobrun.BoundedSemaphore(1):release()", status: 1, expect: "released too many times"),
    .init(name: "Barrier(0)", script: "jobrun.Barrier(0)", status: 1, expect: "parties must be >= 1, got 0"),
    .init(name: "negative Semaphore", script: "jobrun.Semaphore(-1)", status: 1, expect: "value must be >= 0"),
    .init(name: "Condition wait without its lock", script: "jobrun.Condition():wait(1)", status: 1, expect: "lock must be held"),
    .init(name: "Dict key that is a table", script: "jobrun.Dict()[{}] = 1", status: 1, expect: "a Dict key must be a string, number or boolean, got table"),
    .init(name: "Dict key NaN", script: "local d = jobrun.Dict(); d[0/0] = 1", status: 1, expect: "cannot be NaN"),
    .init(name: "Value of a string", script: "jobrun.Value('x')", status: 1, expect: "must be a number, got string"),
    .init(name: "send on a closed Pipe end", script: "local a, b = jobrun.Pipe(); a:close(); a:send(1)", status: 1, expect: "this end is closed"),
    .init(name: "wrong end of a one-way Pipe", script: "local r, w = jobrun.Pipe(false); r:send(1)", status: 1, expect: "only receives"),
    .init(name: "os.exit inside Lock:with", script: """
        local l = jobrun.Lock()
        local p = jobrun.Process{target = function() l:with(function() os.exit(7) end) end}
        p:start(); p:join()
        print(p.exitcode, l:acquire(true, 5))
        """, status: 0, expect: "7\ttrue\towner died"),
    .init(name: "worker that closes its standard descriptors", script: """
        local q = jobrun.Queue()
        local p = jobrun.Process{target = function() io.stdout:close(); io.stderr:close(); q:put("still works") end}
        p:start(); print(q:get(true, 10)); p:join(); print(p.exitcode)
        """, status: 0, expect: "still works\n0"),
    .init(name: "error inside a worker", script: "local p = jobrun.Process{name = 'w', target = function() error('bad thing') end}; p:start(); p:join(); print(p.exitcode)", status: 0, expect: "Process w (pid "),
    .init(name: "deadlock", script: "jobrun.Queue():get()", status: 1, expect: "jobrun.Deadlock"),
]

@Suite("Bad input gets one clear message")
struct BadInputTests {
    @Test(arguments: badInputs)
    func badInput(_ c: BadInput) { expectClearOutcome(c) }

    @Test func workerThatExhaustsMemoryFailsAlone() {
        let r = runScript("""
            local p = jobrun.Process{name = "hog", target = function()
              local t = {}
              while true do t[#t + 1] = string.rep("x", 1e6) .. #t end
            end}
            p:start(); p:join()
            print("hog exit", p.exitcode)
            """, shell: "ulimit -v 3000000", timeout: 120)
        expectStatus(r)
        #expect(r.stdout.contains("hog exit\t1"))
        #expect(r.stderr.contains("Process hog (pid ") && r.stderr.contains("not enough memory"))
    }
}
