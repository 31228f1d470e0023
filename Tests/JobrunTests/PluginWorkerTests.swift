import Glibc
import Testing
import JobrunCore
@testable import Jobrun

/// The plug-in engine in this process, driven as the host drives it:
/// requests written by LuaWire, responses read by LuaWire.
@Suite(.serialized) struct PluginWorkerTests {
    /// A folder of plug-ins under /tmp, removed when the test ends.
    final class Folder {
        let path: String
        init() {
            var template = Array("/tmp/jobrun-plugins-XXXXXX".utf8CString)
            path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        }
        deinit { _ = system("rm -rf '\(path)'") }
        func write(_ name: String, _ text: String) {
            let f = fopen(path + "/" + name, "w")!
            fputs(text, f)
            fclose(f)
        }
    }

    struct Reply {
        var id: Int64
        var value: LuaValue
        var failure: PluginWire.Failure?
        var code: String? { failure?.code }
        var message: String { failure?.message ?? "" }
    }

    /// A call as the host makes it: PluginWire's request, PluginWire's reading of the response.
    static func call(_ w: PluginWorker, _ plugin: String, _ fn: String, _ arg: LuaValue = nil, id: Int64 = 7,
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> Reply {
        let request = try PluginWire.request(id: id, plugin: plugin, function: fn, argument: arg)
        switch try PluginWire.response(w.handle(request)) {
        case .success(let rid, let value):
            #expect(rid == id, sourceLocation: sourceLocation)
            return Reply(id: rid, value: value)
        case .failure(let rid, let f):
            #expect(rid == id, sourceLocation: sourceLocation)
            #expect(f.plugin == plugin && f.function == fn || f.code == "unsendableResult", "\(f)", sourceLocation: sourceLocation)
            return Reply(id: rid, value: nil, failure: f)
        }
    }

    func worker(_ folder: Folder, _ options: PluginWorker.Options = .init(outputFD: 2)) throws -> PluginWorker {
        try PluginWorker(directory: folder.path, options: options)
    }

    @Test func warmCallsKeepTheirUpvalues() throws {
        let f = Folder()
        f.write("counter.lua", "local n = 0\nreturn {inc = function(by) n = n + (by or 1) return n end}\n")
        let w = try worker(f)
        for i in 1...5 { #expect(try Self.call(w, "counter", "inc").value == .integer(Int64(i))) }
        #expect(try Self.call(w, "counter", "inc", 10).value == 15)
        let raw = try LuaWire.encodeValues([1, "counter", "inc", nil]).withUnsafeBytes { w.handle(bytes: $0) }
        #expect(try LuaWire.decodeValues(raw) == [1, true, 16])
        w.stopChildren()   // none to stop: the state stays usable
        #expect(try Self.call(w, "counter", "inc").value == 17)
    }

    @Test func argumentsAndResultsCrossUnchanged() throws {
        let f = Folder()
        f.write("echo.lua", "return {echo = function(x) return x end, two = function() return 1, 2 end,\n"
                + "types = function(t) return {math.type(t.i), math.type(t.f), #t.s} end}\n")
        let w = try worker(f)
        let v: LuaValue = ["path": "a.png", "width": 128, "scale": 0.5, "tags": ["x", "y"], "bytes": .string([0, 255, 10])]
        #expect(try Self.call(w, "echo", "echo", v, id: -3).value == v)
        #expect(try Self.call(w, "echo", "echo").value == nil)
        #expect(try Self.call(w, "echo", "two").value == 1, "the first result only")
        #expect(try Self.call(w, "echo", "types", ["i": 2, "f": 2.0, "s": "abc"]).value == ["integer", "float", 3])
    }

    @Test func everyErrorHasItsCodeAndTheWorkerGoesOn() throws {
        let f = Folder()
        f.write("good.lua", "return {ok = function() return 'ok' end, notfn = 3}\n")
        f.write("bad.lua", "return {\n  f = function() end,\n  g = \n")
        f.write("number.lua", "return 42\n")
        f.write("loadfails.lua", "error('cannot start')\n")
        f.write("fails.lua", """
            local M = {}
            local function inner(x)
              error("boom " .. tostring(x))
            end
            function M.run(x) inner(x) end
            function M.tbl() error({message = "table message", detail = 1}) end
            function M.str() error(setmetatable({}, {__tostring = function() return "custom" end})) end
            function M.kind() jobrun.sleep("soon") end
            function M.exit() os.exit(3) end
            function M.co() return {co = coroutine.create(print)} end
            function M.fn() return {1, {handler = function() end}} end
            function M.ud() return {out = io.stderr} end
            function M.num() error(42) end
            function M.cycle() local t = {} t.me = t return t end
            function M.shared() local t = {1} return {t, t} end
            function M.dag() local t = {1} for i = 1, 40 do t = {t, t} end return t end
            return M
            """)
        let w = try worker(f)
        func expectError(_ plugin: String, _ fn: String, _ code: PluginErrorCode, _ contains: String,
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
            let r = try Self.call(w, plugin, fn, sourceLocation: sourceLocation)
            #expect(r.code == code.rawValue, "\(r.message)", sourceLocation: sourceLocation)
            #expect(r.message.contains(contains), "\(r.message)", sourceLocation: sourceLocation)
            #expect(try Self.call(w, "good", "ok").value == "ok", "the worker serves after \(code)", sourceLocation: sourceLocation)
        }
        try expectError("nope", "x", .pluginNotFound, "nope.lua does not exist")
        try expectError("../good", "ok", .pluginNotFound, "is not a plug-in name")
        try expectError("bad", "f", .syntaxError, "bad.lua:4:")
        try expectError("number", "f", .pluginNotATable, "returned number, not a table")
        try expectError("loadfails", "f", .luaError, "loadfails.lua:1: cannot start")
        try expectError("good", "missing", .functionMissing, "has no function \"missing\"")
        try expectError("good", "notfn", .functionMissing, "its field is a number")
        try expectError("fails", "run", .luaError, "fails.lua:3: boom nil")
        try expectError("fails", "tbl", .luaError, "table message")
        try expectError("fails", "str", .luaError, "custom")
        try expectError("fails", "kind", .luaError, "fails.lua:8: jobrun.TypeError: sleep")
        try expectError("fails", "num", .luaError, "42")
        try expectError("fails", "exit", .luaError, "os.exit is not allowed in a plug-in")
        try expectError("fails", "co", .unsendableResult, "result.co: a coroutine cannot be a LuaValue")
        try expectError("fails", "fn", .unsendableResult, "result[2].handler: a function cannot be a LuaValue")
        try expectError("fails", "ud", .unsendableResult, "result.out: a userdata (FILE*) cannot be a LuaValue")
        try expectError("fails", "cycle", .unsendableResult, "result.me: a table that contains itself")
        #expect(try Self.call(w, "fails", "shared").value == [[1], [1]], "a shared table arrives as copies")
        // Shared tables that would expand to 2^40 copies: checked once each in
        // the worker, refused by the host's size bound, still routed by id.
        let dag = try Self.call(w, "fails", "dag", id: 99)
        #expect(dag.code == "unsendableResult" && dag.message.hasPrefix("result"), "\(dag.message)")

        // The traceback names the plug-in's lines and none of jobrun's.
        let r = try Self.call(w, "fails", "run", 5)
        let tb = r.failure?.traceback ?? ""
        #expect(tb.contains("fails.lua:3: in upvalue 'inner'") || tb.contains("fails.lua:3: in local 'inner'"), "\(tb)")
        #expect(tb.contains("fails.lua:5: in function"), "\(tb)")
        #expect(!tb.contains("jobrun/prelude"), "\(tb)")
        #expect(r.message.hasSuffix("fails.lua:3: boom 5"), "\(r.message)")

        // A request that is not one.
        let bad = try LuaWire.decodeValues(w.handle([0xFF, 0x00]))
        #expect(bad[1] == false && bad[2]["code"] == "badRequest")
        let wrong = try LuaWire.decodeValues(w.handle(LuaWire.encodeValues([5, "good"])))
        #expect(wrong[0] == 5 && wrong[2]["code"] == "badRequest")
        #expect(try Self.call(w, "good", "ok").value == "ok")
    }

    @Test func unreadablePlugin() throws {
        let f = Folder()
        // A file that cannot be reached: a symbolic link to itself (ELOOP), as root too.
        symlink("loop.lua", f.path + "/loop.lua")
        let w = try worker(f)
        let loop = try Self.call(w, "loop", "x")
        #expect(loop.code == "pluginNotReadable" && loop.message.contains("symbolic links"), "\(loop.message)")
        guard getuid() != 0 else { return }   // root reads any file
        f.write("secret.lua", "return {}\n")
        chmod(f.path + "/secret.lua", 0)
        let r = try Self.call(w, "secret", "x")
        #expect(r.code == "pluginNotReadable", "\(r.message)")
    }

    @Test func anEditedPluginIsReloadedByTheNextCall() throws {
        let f = Folder()
        f.write("p.lua", "local n = 0 return {v = function() n = n + 1 return 'one', n end}\n")
        f.write("util.lua", "return {word = 'alpha'}\n")
        f.write("q.lua", "local util = require 'util' return {w = function() return util.word end}\n")
        let w = try worker(f)
        #expect(try Self.call(w, "p", "v").value == "one")
        #expect(try Self.call(w, "q", "w").value == "alpha")
        f.write("p.lua", "return {v = function() return 'two, longer' end}\n")
        #expect(try Self.call(w, "p", "v").value == "two, longer")
        // A sibling it required changes: the plug-in that required it reloads too.
        f.write("util.lua", "return {word = 'beta, longer'}\n")
        #expect(try Self.call(w, "q", "w").value == "beta, longer")
        // A syntax error on edit, then the fix.
        f.write("p.lua", "return {v = \n")
        #expect(try Self.call(w, "p", "v").code == "syntaxError")
        f.write("p.lua", "return {v = function() return 'three' end}\n")
        #expect(try Self.call(w, "p", "v").value == "three")
        // A sibling that stops compiling: a syntax error for the plug-in requiring it.
        f.write("util.lua", "return {word = \n")
        let broken = try Self.call(w, "q", "w")
        #expect(broken.code == "syntaxError" && broken.message.contains("util.lua:2:"), "\(broken.message)")
        f.write("util.lua", "return {word = 'gamma'}\n")
        #expect(try Self.call(w, "q", "w").value == "gamma")
        // Removed: not found.
        unlink(f.path + "/p.lua")
        #expect(try Self.call(w, "p", "v").code == "pluginNotFound")
    }

    @Test func requireFindsSiblingsOnlyInThePluginFolder() throws {
        let f = Folder()
        f.write("main.lua", "local h = require 'helpers.text' return {up = function(s) return h.up(s) end,\n"
                + "paths = function() return {package.path, package.cpath} end}\n")
        mkdir(f.path + "/helpers", 0o755)
        f.write("helpers/text.lua", "return {up = string.upper}\n")
        let w = try worker(f)
        #expect(try Self.call(w, "main", "up", "abc").value == "ABC")
        // Nothing from the current directory: every entry of package.path and
        // package.cpath is absolute, the plug-in folder's first.
        let paths = try Self.call(w, "main", "paths").value
        let path = paths[1].stringValue ?? "", cpath = paths[2].stringValue ?? ""
        #expect(path.hasPrefix(f.path + "/?.lua;" + f.path + "/?/init.lua"), "\(path)")
        for entry in (path + ";" + cpath).split(separator: ";") { #expect(entry.hasPrefix("/"), "\(path) \(cpath)") }
        // A plug-in in a subfolder, named with a dot.
        #expect(try Self.call(w, "helpers.text", "up", "x").value == "X")
    }

    @Test func memoryLimit() throws {
        let f = Folder()
        f.write("hog.lua", """
            local keep = {}
            return {
              grow = function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end end,
              keep = function() for i = 1, 1e9 do keep[#keep + 1] = ("y"):rep(64) .. i end end,
              free = function() keep = {} collectgarbage() return #keep end,
              small = function() return ("z"):rep(10) end,
            }
            """)
        let w = try worker(f)
        #expect(try Self.call(w, "hog", "small").value == "zzzzzzzzzz")
        let base = w.memoryInUse
        w.setMemoryLimit(base + (8 << 20))
        let r = try Self.call(w, "hog", "grow")
        #expect(r.code == "limitExceeded", "\(r.message)")
        #expect(r.message.contains("not enough memory"))
        #expect(try Self.call(w, "hog", "small").value == "zzzzzzzzzz")
        #expect(w.memoryInUse < base + (2 << 20), "collected after the failed call: \(w.memoryInUse) vs \(base)")
        // Memory a plug-in keeps: the next calls fail until it lets go.
        #expect(try Self.call(w, "hog", "keep").code == "limitExceeded")
        #expect(try Self.call(w, "hog", "free").value == 0)
        #expect(try Self.call(w, "hog", "small").value == "zzzzzzzzzz")
        w.setMemoryLimit(nil)
        // Set from the options too.
        let w2 = try worker(f, .init(memoryLimit: 4 << 20))
        #expect(try Self.call(w2, "hog", "grow").code == "limitExceeded")
        #expect(try Self.call(w2, "hog", "small").value == "zzzzzzzzzz")
    }

    /// Options.pluginMemory: a plug-in's own Lua budget while its calls
    /// run, the worker's (here none) for the others.
    @Test func aPluginsOwnMemoryLimit() throws {
        let f = Folder()
        f.write("hog.lua", "return { grow = function() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end end }\n")
        f.write("big.lua", "return { rep = function(n) return #('x'):rep(n) end }\n")
        let w = try worker(f, .init(outputFD: 2, pluginMemory: ["hog": 8 << 20]))
        #expect(try Self.call(w, "hog", "grow").code == "limitExceeded")
        #expect(try Self.call(w, "big", "rep", .integer(32 << 20)).value == .integer(32 << 20), "big has no limit")
        #expect(try Self.call(w, "hog", "grow").code == "limitExceeded", "hog's limit holds after another plug-in's call")
    }

    @Test func restrictedMode() throws {
        let f = Folder()
        let allowed = Folder()
        allowed.write("data.txt", "hello\n")
        f.write("r.lua", """
            local M = {}
            local function try(fn, ...) local ok, e = pcall(fn, ...) return ok and "ran" or tostring(e) end
            function M.refused()
              return {
                execute = try(os.execute, "true"), popen = try(io.popen, "true"),
                loadlib = try(package.loadlib, "x", "y"), getenv = try(os.getenv, "HOME"),
                debug = type(debug), cmodule = try(require, "socket.core"),
                script = try(jobrun.Process, {script = "x.lua"}),
                exit = try(os.exit, 0),
              }
            end
            function M.files(dir)
              local ok, err = io.open("/etc/passwd")
              local inside = assert(io.open(dir .. "/data.txt")):read("l")
              local w = assert(io.open(dir .. "/new.txt", "w")) w:write("x") w:close()
              local escape = io.open(dir .. "/../../etc/passwd")
              local rm_out = select(2, os.remove("/tmp/nothing-here"))
              return {outside = err, inside = inside, escape = escape == nil, removed = os.remove(dir .. "/new.txt"),
                      rm_out = rm_out, lines = try(io.lines, "/etc/passwd")}
            end
            function M.safe() return {string.format("%d", 3), math.floor(2.5), table.concat({1, 2}, ","), utf8.char(72), os.time() > 0} end
            return M
            """)
        let w = try worker(f, .init(restricted: true, allowedFolders: [allowed.path]))
        let r = try Self.call(w, "r", "refused").value
        for key in ["execute", "popen", "loadlib", "getenv"] {
            #expect(r[.string(key)].stringValue?.contains("is not allowed in restricted mode") == true, "\(key): \(r[.string(key)])")
        }
        #expect(r["debug"] == "nil")
        #expect(r["cmodule"].stringValue?.contains("module 'socket.core' not found") == true, "\(r["cmodule"])")
        #expect(r["script"].stringValue?.contains("not allowed in restricted mode") == true)
        #expect(r["exit"].stringValue?.contains("os.exit is not allowed") == true)
        let files = try Self.call(w, "r", "files", .string(allowed.path)).value
        #expect(files["outside"].stringValue?.contains("outside the allowed folders") == true, "\(files)")
        #expect(files["inside"] == "hello")
        #expect(files["escape"] == true)
        #expect(files["removed"] == true)
        #expect(files["rm_out"].stringValue?.contains("outside the allowed folders") == true)
        #expect(files["lines"].stringValue?.contains("outside the allowed folders") == true)
        #expect(try Self.call(w, "r", "safe").value == ["3", 2, "1,2", "H", true])
        // Unrestricted, the same plug-in may run commands.
        let open = try worker(f)
        #expect(try Self.call(open, "r", "refused").value["execute"] == "ran")
    }

    @Test func printGoesToTheOutputDescriptorTagged() throws {
        let f = Folder()
        f.write("noisy.lua", "return {go = function() print('hello', 1) io.write('part') io.stdout:write(' rest\\n') "
                + "io.write(2.5, '\\n') return 'done' end}\n")
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let w = try worker(f, .init(outputFD: fds[1]))
        #expect(try Self.call(w, "noisy", "go").value == "done")
        close(fds[1])
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, 5000) > 0 {
            let n = read(fds[0], &buf, buf.count)
            if n <= 0 { break }
            out += buf[..<n]
        }
        #expect(String(decoding: out, as: UTF8.self) == "[noisy:go] hello\t1\n[noisy:go] part rest\n[noisy:go] 2.5\n")
    }

    /// The in-process cost of one call (decode, dispatch, call, encode):
    /// what a worker adds to a round trip.
    @Test func costPerCall() throws {
        let f = Folder()
        f.write("fast.lua", "return {add = function(t) return t.a + t.b end}\n")
        let w = try worker(f)
        let request = try LuaWire.encodeValues([1, "fast", "add", ["a": 1, "b": 2]])
        #expect(try LuaWire.decodeValues(w.handle(request))[2] == 3)
        for check in [0.0, 1.0] {
            let w = try worker(f, .init(reloadCheckInterval: check))
            _ = w.handle(request)
            let n = 10_000
            let t0 = ContinuousClock.now
            for _ in 0..<n { _ = w.handle(request) }
            let d = ContinuousClock.now - t0
            let us = (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(n)
            print("PluginWorker.handle: \((us * 100).rounded() / 100) µs/call (reload check every \(check == 0 ? "call" : "second"))")
        }
    }
}

extension PluginWorkerTests {
    /// The plug-in of docs/embedding.md, run.
    @Test func theGuidesPlugin() throws {
        let here = #filePath
        let docPath = String(here[..<here.range(of: "/Tests/")!.lowerBound]) + "/docs/embedding.md"
        let f = fopen(docPath, "r")!
        var doc = ""
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), f) != nil { doc += String(cString: line) }
        fclose(f)
        let start = doc.range(of: "```lua\n-- plugins/thumbnail.lua\n")!.upperBound
        let source = String(doc[start..<doc[start...].range(of: "```")!.lowerBound])
        let folder = Folder()
        folder.write("thumbnail.lua", source)
        folder.write("sizes.lua", "return {clamp = function(w) return math.min(w, 100) end}\n")
        let w = try worker(folder)
        #expect(try Self.call(w, "thumbnail", "resize", ["path": "a.png", "width": 128]).value
                == ["path": "a.png", "width": 100, "calls": 1])
        #expect(try Self.call(w, "thumbnail", "resize", ["path": "b.png", "width": 50]).value["calls"] == 2)
    }
}

extension PluginWorkerTests {
    /// The limit met at every point of a call (loading, the call, the
    /// error handler, building the error): each response is a response,
    /// with a code, and the worker serves once the limit is lifted.
    @Test func memoryLimitAtEveryPoint() throws {
        let f = Folder()
        f.write("m.lua", """
            local big = {}
            for i = 1, 200 do big[i] = ("b"):rep(100) .. i end
            local function deep(n) if n == 0 then error({message = ("e"):rep(300)}) end return deep(n - 1) .. "" end
            return {
              alloc = function(n) local t = {} for i = 1, n do t[i] = {i, tostring(i)} end return #t end,
              fail = function() return deep(40) end,
              ok = function() return "ok" end,
            }
            """)
        var codes: [String: Int] = [:]
        for extra in stride(from: 0, to: 160_000, by: 4_000) {
            let w = try worker(f)
            w.setMemoryLimit(w.memoryInUse + extra)
            for (fn, arg) in [("alloc", LuaValue.integer(2_000)), ("fail", nil), ("ok", nil)] {
                let r = try Self.call(w, "m", fn, arg)
                codes[r.code ?? "ok", default: 0] += 1
                #expect(r.code == nil || ["limitExceeded", "luaError"].contains(r.code!), "\(r.code!): \(r.message)")
            }
            w.setMemoryLimit(nil)
            #expect(try Self.call(w, "m", "ok").value == "ok")
            #expect(try Self.call(w, "m", "alloc", 100).value == 100)
        }
        #expect(codes["limitExceeded", default: 0] > 0 && codes["ok", default: 0] > 0, "\(codes)")
    }
}
