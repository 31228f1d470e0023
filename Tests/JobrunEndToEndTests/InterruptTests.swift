import Foundation
import Testing

// Ctrl-C and SIGTERM to the main process: --stats is still printed and
// --stats-json still written (whole, never empty), the exit is 130/143 (the
// process dies of its signal), the status line is gone whatever the width,
// and workers show in `ps` under their names.

/// A run that starts two consumers, feeds them, reports a counter, then
/// writes its pid to `<dir>/ready` (once the status line has had time to
/// show) and waits forever.
private let waitsForever = """
    local dir = ...
    local q = jobrun.JoinableQueue{name = "tasks"}
    local ps = {}
    for i = 1, 2 do
      ps[i] = jobrun.Process{target = function() for x in q:items() do end end, name = "consumer-" .. i}
      ps[i]:start()
    end
    for i = 1, 10 do q:put(i) end
    q:join()
    jobrun.progress("fed", 5, 10)
    jobrun.sleep(1)   -- the status line first shows after 0.3 s
    local f = assert(io.open(dir .. "/ready.tmp", "w")); f:write(jobrun.current_process().pid); f:close()
    assert(os.rename(dir .. "/ready.tmp", dir .. "/ready"))
    while true do jobrun.sleep(0.01) end
    """

/// A bash function: `when_ready CMD` waits (bounded) for `$D/ready`, runs
/// CMD (with `$p` the main process's pid), then waits (bounded) until the
/// main process has gone.
private let whenReady = """
    when_ready() {
      for i in $(seq 400); do [ -s "$D/ready" ] && break; sleep 0.05; done
      p=$(cat "$D/ready" 2>/dev/null)
      eval "$1"
      for i in $(seq 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    }

    """

@Suite("Ctrl-C and SIGTERM")
struct InterruptTests {
    private func parseJSON(_ path: String) -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    @Test func sigtermStillWritesStatsAndExits143() throws {
        let dir = ScratchFolder(["main.lua": waitsForever], prefix: "jobrun-interrupt")
        defer { dir.remove() }
        let json = dir.file("stats.json")
        let command = "D='\(dir.path)'\n" + whenReady + "when_ready 'kill -TERM $p' & "
            + "exec '\(jobrunBinary)' --stats --stats-json '\(json)' '\(dir.file("main.lua"))' '\(dir.path)'"
        let r = runCommand(["/bin/bash", "-c", command], timeout: 60)
        expectStatus(r, -15, "it dies of SIGTERM (a shell says 143)")
        #expect(r.stderr.contains("jobrun: run statistics"), "--stats printed: \(r)")
        #expect(r.stderr.contains("MainProcess"), "\(r)")
        #expect(r.stderr.range(of: #"MainProcess +\d+ +signal 15"#, options: .regularExpression) != nil, "\(r)")
        #expect(r.stderr.range(of: #"consumer-1 +\d+ +signal 15"#, options: .regularExpression) != nil, "\(r)")
        #expect(r.stderr.contains("tasks"), "the queue's row: \(r)")
        let stats = try #require(parseJSON(json), "a complete JSON file: \(String(describing: try? String(contentsOfFile: json, encoding: .utf8)))")
        let processes = try #require(stats["processes"] as? [[String: Any]])
        #expect(processes.count == 3)
        #expect(processes.first?["exit"] as? Int == -15)
        let queues = try #require(stats["queues"] as? [[String: Any]])
        #expect(queues.first?["items"] as? Int == 10)
        // Only the file itself is left: no temporary file beside it.
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(left == ["main.lua", "ready", "stats.json"], "\(left)")
    }

    @Test func jsonIsNeverLeftEmptyOrCutShort() throws {
        // Killed outright (SIGKILL: no handler runs), the run leaves no file
        // at all, neither the final name nor its temporary copy; an older
        // file of that name is left as it was.
        let dir = ScratchFolder(["main.lua": waitsForever, "old.json": "{\"old\":true}\n"], prefix: "jobrun-interrupt")
        defer { dir.remove() }
        for name in ["new.json", "old.json"] {
            try? FileManager.default.removeItem(atPath: dir.file("ready"))
            let command = "D='\(dir.path)'\n" + whenReady + "when_ready 'kill -KILL $p' & "
                + "exec '\(jobrunBinary)' --stats-json '\(dir.file(name))' '\(dir.file("main.lua"))' '\(dir.path)'"
            let r = runCommand(["/bin/bash", "-c", command], timeout: 60)
            expectStatus(r, -9, "killed")
            // The monitor removes the temporary file once the main process is gone.
            let clean = waitUntil(timeout: 10) {
                ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).allSatisfy { !$0.hasPrefix(".") }
            }
            #expect(clean, "a temporary file is left: \(String(describing: try? FileManager.default.contentsOfDirectory(atPath: dir.path)))")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("new.json")))
        #expect(try String(contentsOfFile: dir.file("old.json"), encoding: .utf8) == "{\"old\":true}\n")
    }

    /// Ctrl-C typed at a terminal `columns` wide: everything the terminal
    /// received, and the exit status.
    private func ctrlC(columns: Int, _ dir: ScratchFolder) -> RunResult {
        let inner = "stty cols \(columns) rows 30; exec '\(jobrunBinary)' --stats --stats-json '\(dir.file("stats.json"))' "
            + "'\(dir.file("main.lua"))' '\(dir.path)'"
        let command = "D='\(dir.path)'\n" + whenReady + "when_ready 'printf \"\\003\"' | /usr/bin/script -qfec \"$1\" /dev/null"
        return runCommand(["/bin/bash", "-c", command, "bash", inner], timeout: 60)
    }

    @Test(arguments: [12, 40, 200])
    func ctrlCAtATerminalLeavesNoStatusLine(columns: Int) throws {
        let dir = ScratchFolder(["main.lua": waitsForever], prefix: "jobrun-interrupt")
        defer { dir.remove() }
        let r = ctrlC(columns: columns, dir)
        expectStatus(r, 130, "script reports the child's death by SIGINT as 128 + 2")
        let out = r.stdout
        #expect(out.contains("\rjobrun "), "the status line was drawn: \(out.debugDescription)")
        #expect(out.contains("jobrun: run statistics"), "--stats after Ctrl-C: \(out.debugDescription)")
        #expect(parseJSON(dir.file("stats.json")) != nil, "--stats-json after Ctrl-C")
        // Every drawing fits in the width minus one column.
        for drawn in statusDrawings(out) {
            #expect(drawn.count <= columns - 1, "\(drawn.debugDescription) is wider than \(columns - 1) columns")
        }
        // And on the screen, once it is over, no status line is left.
        let screen = ScreenModel(columns: columns).feed(out)
        let status = screen.filter { $0.hasPrefix("jobrun ") && !$0.hasPrefix("jobrun: ") }
        #expect(status.isEmpty, "left on the screen: \(status) in\n\(screen.joined(separator: "\n"))")
        #expect(screen.contains { $0.hasPrefix("jobrun: run") }, "\(screen.joined(separator: "\n"))")
    }

    @Test func aWorkerSignalledAsItStartsDiesAsAWorker() throws {
        // SIGTERM can reach a forked child before it has reset the main
        // process's handler: it must die as a worker, not report an
        // interrupted run in the main process's name.
        let dir = ScratchFolder(["main.lua": """
            for i = 1, 40 do
              local p = jobrun.Process{target = function() jobrun.sleep(60) end}
              p:start(); p:terminate(); p:join()
              assert(p.exitcode == -15, p.exitcode)
            end
            print("ok")
            """], prefix: "jobrun-interrupt")
        defer { dir.remove() }
        let json = dir.file("stats.json")
        let r = runJobrun(["--stats-json", json, dir.file("main.lua")], timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "ok\n")
        let data = try #require(FileManager.default.contents(atPath: json))
        let stats = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let main = try #require((stats["processes"] as? [[String: Any]])?.first)
        #expect(main["exit"] as? Int == 0, "\(main)")
    }

    @Test func workersShowTheirNamesInPs() throws {
        let code = """
            local p = jobrun.Process{target = function() jobrun.sleep(30) end, name = "consumer-1"}
            p:start()
            local s = jobrun.Process{script = "stage.lua", name = "stage-2"}
            s:start()
            local function cmdline(pid)
              for _ = 1, 400 do
                local f = io.open("/proc/" .. pid .. "/cmdline")
                local text = f and f:read("a"):gsub("%z+$", ""):gsub("%z", " ")
                if f then f:close() end
                if text and text:find("^jobrun: ") then return text end
                jobrun.sleep(0.01)
              end
              return "never renamed"
            end
            print(cmdline(p.pid))
            print(cmdline(s.pid))
            p:terminate(); s:terminate(); p:join(); s:join()
            """
        let r = runScript(code, files: ["stage.lua": "jobrun.sleep(30)"], timeout: 60)
        expectLines(r, [
            "a forked worker: its name and the main script's": "jobrun: consumer-1 (main.lua)",
            "a script worker: its name and its own script": "jobrun: stage-2 (stage.lua)",
        ])
    }

    @Test func fitCountsDisplayColumns() throws {
        // The cut is by display column, with control characters neutralised:
        // a counter's name is the script's to choose.
        let dir = ScratchFolder(["main.lua": """
            jobrun.progress("名前\\tabc", 1, 2)
            jobrun.sleep(1.5)   -- the status line first shows after 0.3 s
            """], prefix: "jobrun-interrupt")
        defer { dir.remove() }
        let r = runCommand(["/usr/bin/script", "-qfec", "stty cols 40 rows 10; exec '\(jobrunBinary)' '\(dir.file("main.lua"))'", "/dev/null"],
                           timeout: 60)
        expectStatus(r, 0)
        let drawn = statusDrawings(r.stdout)
        #expect(!drawn.isEmpty, "\(r.stdout.debugDescription)")
        for d in drawn {
            #expect(!d.contains("\t"), "a control character reached the terminal: \(d.debugDescription)")
            let columns = d.unicodeScalars.reduce(0) { $0 + (($1.value >= 0x3000 && $1.value < 0xA000) ? 2 : 1) }
            #expect(columns <= 39, "\(d.debugDescription) takes \(columns) columns")
        }
    }
}

/// The status lines drawn in `output`: each text between "\r" and "\e[J".
private func statusDrawings(_ output: String) -> [String] {
    output.components(separatedBy: "\u{1B}[J").dropLast().compactMap { part in
        guard let r = part.range(of: "\r", options: .backwards) else { return nil }
        let text = String(part[r.upperBound...])
        return text.hasPrefix("jobrun ") ? text : nil
    }
}

/// Just enough of a terminal to see what a user would: a screen `columns`
/// wide that wraps as xterm does (a character written in the last column
/// leaves the cursor there until the next one), "\r", "\n", "\e[K", "\e[J"
/// and "\e[A"; other escape sequences are skipped.
private struct ScreenModel {
    let columns: Int
    var rows: [[Character]] = [[]]
    var row = 0, col = 0
    var pendingWrap = false

    init(columns: Int) { self.columns = columns }

    mutating func put(_ c: Character) {
        if pendingWrap { newline(); col = 0; pendingWrap = false }
        while rows[row].count <= col { rows[row].append(" ") }
        rows[row][col] = c
        if col == columns - 1 { pendingWrap = true } else { col += 1 }
    }

    mutating func newline() {
        row += 1
        if row == rows.count { rows.append([]) }
    }

    func feed(_ text: String) -> [String] {
        var t = self
        var chars = Array(text)[...]
        while let c = chars.popFirst() {
            switch c {
            case "\r": t.col = 0; t.pendingWrap = false
            case "\n", "\r\n":
                if c == "\r\n" { t.col = 0 }
                t.newline(); t.pendingWrap = false
            case "\u{1B}":
                guard chars.first == "[" else { continue }
                chars.removeFirst()
                var params = ""
                while let p = chars.first, p.isNumber || p == ";" || p == "?" { params.append(p); chars.removeFirst() }
                guard let final = chars.popFirst() else { break }
                switch final {
                case "K": if t.rows[t.row].count > t.col { t.rows[t.row].removeSubrange(t.col...) }
                case "J":
                    if t.rows[t.row].count > t.col { t.rows[t.row].removeSubrange(t.col...) }
                    t.rows.removeSubrange((t.row + 1)...)
                case "A": t.row = max(0, t.row - (Int(params) ?? 1)); t.pendingWrap = false
                default: break
                }
            default:
                t.put(c)
            }
        }
        return t.rows.map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}
