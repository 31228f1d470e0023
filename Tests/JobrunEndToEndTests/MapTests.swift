import Foundation
import Testing

// `jobrun map` (Sources/jobrun/Map.swift, prelude/map.lua), run as a user
// runs it: a function file, input files or stdin, and what comes out.
// MapControlTests (below) covers the options that need the Pool's per-item
// control (--retries, --timeout, --halt, --joblog, --resume).

/// Runs `jobrun map ARGS` in a scratch folder holding `files`.
func runMap(_ args: [String], files: [String: String] = [:], stdin: String? = nil, timeout: Double = 60) -> RunResult {
    let dir = ScratchFolder(files)
    defer { dir.remove() }
    return runJobrun(["map"] + args, stdin: stdin, timeout: timeout, cwd: dir.path)
}

/// A function file: `return function(l) BODY end`.
func fn(_ body: String) -> String { "return function(l) \(body) end\n" }

@Suite("jobrun map")
struct MapTests {
    @Test func linesOfFilesStdinAndDashInOrder() {
        let files = ["up.lua": fn("return l:upper()"), "a.txt": "a1\na2\n", "b.txt": "b1\nb2"]
        let r = runMap(["-k", "up.lua", "a.txt", "-", "b.txt"], files: files, stdin: "s1\ns2\n")
        expectStatus(r)
        #expect(r.lines == ["A1", "A2", "S1", "S2", "B1", "B2"], "files and - in the order given; a last line without newline counts")
        let plain = runMap(["up.lua"], files: files, stdin: "x\ny\nz\n")
        expectStatus(plain)
        #expect(plain.lines.sorted() == ["X", "Y", "Z"], "no INPUT: stdin")
        let empty = runMap(["up.lua"], files: files, stdin: "")
        expectStatus(empty)
        #expect(empty.stdout == "")
    }

    @Test func keepOrderHoldsResultsWhileEarlyLinesAreSlow() {
        // The first lines take longest: without -k they would come out last.
        let slow = fn("if tonumber(l) <= 3 then jobrun.sleep(0.3) end return l")
        let input = (1...40).map(String.init).joined(separator: "\n") + "\n"
        let r = runMap(["-j", "3", "--keep-order", "slow.lua"], files: ["slow.lua": slow], stdin: input)
        expectStatus(r)
        #expect(r.lines == (1...40).map(String.init))
        let unordered = runMap(["-j", "3", "slow.lua"], files: ["slow.lua": slow], stdin: input)
        expectStatus(unordered)
        #expect(unordered.lines.sorted() == (1...40).map(String.init).sorted(), "every line once, in any order")
    }

    @Test func whatTheFunctionPrintsKeepsItsPlaceWithItsResult() {
        let body = """
            if l == "1" then jobrun.sleep(0.3) end
            print("p", l); io.write("w", 1, 2.5, "\\n"); io.stdout:write("s", l, "\\n"); io.write("partial")
            return "r" .. l
            """
        let r = runMap(["-j", "2", "-k", "f.lua"], files: ["f.lua": fn(body)], stdin: "1\n2\n3\n")
        expectStatus(r)
        let expected = ["1", "2", "3"].flatMap { ["p\t\($0)", "w12.5", "s\($0)", "partial", "r\($0)"] }
        #expect(r.lines == expected, "captured per line, in order; an unended line is ended")
        #expect(r.stderr == "")
        // FN.lua that keeps its own references to print and io.write.
        let cached = "local print, write, out = print, io.write, io.stdout\n" + fn(body.replacingOccurrences(of: "io.write(", with: "write(")
            .replacingOccurrences(of: "io.stdout:write(", with: "out:write("))
        let r2 = runMap(["-j", "2", "-k", "f.lua"], files: ["f.lua": cached], stdin: "1\n2\n3\n")
        expectStatus(r2)
        #expect(r2.lines == expected, "\(r2)")
    }

    @Test func tagPrefixesEveryOutputLineWithTheInputLine() {
        let r = runMap(["-k", "--tag", "f.lua", "in.txt"],
                       files: ["f.lua": fn("print('said ' .. l) return {l:upper(), #l}"), "in.txt": "ab\nc d\n"])
        expectStatus(r)
        #expect(r.lines == ["ab\tsaid ab", "ab\tAB", "ab\t2", "c d\tsaid c d", "c d\tC D", "c d\t3"])
    }

    @Test func resultsPrintAsDocumented() {
        let body = """
            if l == "str" then return "s" elseif l == "nl" then return "two\\nlines\\n"
            elseif l == "int" then return 42 elseif l == "float" then return 1.5
            elseif l == "nil" then return nil elseif l == "false" then return false
            elseif l == "true" then return true elseif l == "list" then return {"x", 7}
            elseif l == "empty" then return "" end
            """
        let input = ["str", "nl", "int", "float", "nil", "false", "true", "list", "empty"].joined(separator: "\n")
        let r = runMap(["-k", "f.lua"], files: ["f.lua": fn(body)], stdin: input)
        expectStatus(r)
        #expect(r.stdout == "s\ntwo\nlines\n42\n1.5\ntrue\nx\n7\n\n")
    }

    @Test func aResultThatCannotBePrintedFailsItsLine() {
        let body = """
            if l == "map" then return {a = 1} elseif l == "fn" then return print
            elseif l == "deep" then return {{}} end return l
            """
        let r = runMap(["-k", "f.lua"], files: ["f.lua": fn(body)], stdin: "ok\nmap\nfn\ndeep\nend\n")
        expectStatus(r, 3)
        #expect(r.lines == ["ok", "end"])
        #expect(r.stderr.contains("jobrun map: stdin:2 ('map'): the function returned a table that is not a list"), "\(r)")
        #expect(r.stderr.contains("jobrun map: stdin:3 ('fn'): the function returned a function: return a string"), "\(r)")
        #expect(r.stderr.contains("jobrun map: stdin:4 ('deep'): the function returned a list whose item 1 is a table"), "\(r)")
    }

    @Test func failuresAreNamedOnceAndCountedInTheExitStatus() {
        let files = ["f.lua": fn("if l:find('bad') then error('no ' .. l) end return l"),
                     "a.txt": "ok1\nbad\tone\nok2\n", "b.txt": "bad two\n"]
        let r = runMap(["-k", "f.lua", "a.txt", "b.txt"], files: files)
        expectStatus(r, 2)
        #expect(r.lines == ["ok1", "ok2"])
        let errs = splitLines(r.stderr)
        #expect(errs == ["jobrun map: a.txt:2 ('bad\\tone'): f.lua:1: no bad\tone",
                         "jobrun map: b.txt:1 ('bad two'): f.lua:1: no bad two"], "\(r)")
        // GNU parallel's convention: at most 101.
        let many = runMap(["f.lua"], files: files, stdin: String(repeating: "bad\n", count: 150))
        expectStatus(many, 101)
        #expect(splitLines(many.stderr).count == 150, "each failure once")
    }

    @Test func aWorkerThatDiesFailsItsLineAndTheRestGoOn() {
        for order in [["-k"], []] {
            let r = runMap(order + ["-j", "2", "f.lua"], files: ["f.lua": fn("if l == 'die' then os.exit(3) end return l")],
                           stdin: "a\ndie\nb\n")
            expectStatus(r, 1, "\(order)")
            #expect(r.lines.sorted() == ["a", "b"], "\(r)")
            #expect(r.stderr.hasPrefix("jobrun map: stdin:2: jobrun.WorkerDied: ") && r.stderr.hasSuffix("exited with status 3\n"), "\(r)")
            #expect(!r.stderr.contains("imap"), "the line is named, not the Pool's item behind it: \(r)")
        }
        let retried = runMap(["-k", "--retries", "1", "f.lua"], files: ["f.lua": fn("if l == 'die' then os.exit(3) end return l")],
                             stdin: "a\ndie\nb\n")
        expectStatus(retried, 1)
        #expect(retried.stderr.hasPrefix("jobrun map: stdin:2 ('die'): jobrun.WorkerDied: ") && retried.stderr.hasSuffix("exited with status 3\n")
                && !retried.stderr.contains("imap"), "\(retried)")
    }

    @Test func aSIGTERMToTheMainProcessAloneStopsWhatTheLinesStarted() {
        // `kill PID` (not the process group, as a terminal's Ctrl-C is):
        // the workers stop, and so do the `sleep 60`s they started, which
        // held `| cat` open for a minute.
        let dir = ScratchFolder(["f.lua": fn("io.open('started-' .. l, 'w'):close() os.execute('sleep 60') return l"),
                                 "in.txt": "a\nb\n"])
        defer { dir.remove() }
        let script = """
            { "$0" map -j 2 f.lua < in.txt & echo $! > pid; wait; } | cat &
            for i in $(seq 200); do [ -e started-a ] && [ -e started-b ] && break; sleep 0.05; done
            kill -TERM "$(cat pid)"
            wait
            echo ended
            """
        let r = runCommand(["/bin/bash", "-c", script, jobrunBinary], timeout: 30, cwd: dir.path)
        #expect(!r.timedOut && r.stdout == "ended\n", "the pipeline waited for what the lines started\n\(r)")
    }

    @Test func aSIGTERMToTheMonitorStopsTheRunAsOneToTheMainProcessDoes() {
        // The monitor shows as `jobrun: monitor of pid N` in ps; a SIGTERM
        // sent to it (before, ignored: the run carried on and exited 0) is
        // passed on to the main process: exit 143, --stats still written.
        let dir = ScratchFolder(["f.lua": fn("io.open('started-' .. l, 'w'):close() os.execute('sleep 60') return l"),
                                 "in.txt": "a\nb\n"])
        defer { dir.remove() }
        let script = """
            { "$0" map --stats -j 2 f.lua < in.txt 2> err.txt & echo $! > pid; wait $!; echo "status $?" > status; } | cat &
            for i in $(seq 200); do [ -e started-a ] && [ -e started-b ] && break; sleep 0.05; done
            kill -TERM "$(pgrep -f "^jobrun: monitor of pid $(cat pid)$")"
            wait
            cat status err.txt
            """
        let r = runCommand(["/bin/bash", "-c", script, jobrunBinary], timeout: 30, cwd: dir.path)
        #expect(!r.timedOut && r.stdout.hasPrefix("status 143\n") && r.stdout.contains("run statistics"), "\(r)")
    }

    @Test func binaryLinesPassThroughAsBytes() throws {
        let dir = ScratchFolder(["echo.lua": fn("return l"), "len.lua": fn("return #l")])
        defer { dir.remove() }
        let bytes: [UInt8] = [0x61, 0x00, 0x62, 0x0A, 0xFF, 0xFE, 0x78, 0x0A, 0xC3, 0xA9, 0x0A, 0x0D, 0x0A]
        try Data(bytes).write(to: URL(fileURLWithPath: dir.file("in.bin")))
        let r = runCommand(["/bin/sh", "-c", "\"$0\" map -k echo.lua in.bin > out.bin", jobrunBinary], cwd: dir.path)
        expectStatus(r)
        let out = try Data(contentsOf: URL(fileURLWithPath: dir.file("out.bin")))
        #expect(Array(out) == bytes, "NUL, invalid UTF-8 and CR come out unchanged")
        let len = runJobrun(["map", "-k", "len.lua", "in.bin"], cwd: dir.path)
        #expect(len.lines == ["3", "3", "2", "1"])
        let bad = ScratchFolder(["f.lua": fn("error('x')")])
        defer { bad.remove() }
        try Data([0x01, 0xFF, 0x27, 0x0A]).write(to: URL(fileURLWithPath: bad.file("in.bin")))
        let named = runJobrun(["map", "f.lua", "in.bin"], cwd: bad.path)
        expectStatus(named, 1)
        #expect(named.stderr.hasPrefix("jobrun map: in.bin:1 ('\\x01\\xFF\\''): "), "escaped in the message: \(named)")
    }

    @Test func aHugeInputIsStreamed() {
        let n = 200_000
        let dir = ScratchFolder(["f.lua": fn("return l * 2")])
        defer { dir.remove() }
        let text = (1...n).map(String.init).joined(separator: "\n") + "\n"
        try? text.write(toFile: dir.file("in.txt"), atomically: true, encoding: .utf8)
        let r = runJobrun(["map", "f.lua", "in.txt"], timeout: 120, cwd: dir.path)
        expectStatus(r)
        let values = r.lines.compactMap { Int($0) }
        #expect(values.count == n)
        #expect(values.reduce(0, +) == n * (n + 1))
    }

    @Test func pipeHandsOutBlocksOfWholeLinesAndEveryByteOnce() {
        let lines = (1...3000).map { "line \($0) " + String(repeating: "x", count: $0 % 50) }
        let input = lines.joined(separator: "\n") + "\n"
        let files = ["id.lua": fn("return true"),
                     "shape.lua": fn("return ('%d %s'):format(#l, l:sub(-1) == '\\n' and 'nl' or 'cut')")]
        for block in ["1k", "4K", "10000", "1MB"] {
            let r = runMap(["-k", "--pipe", "--block", block, "id.lua"], files: files, stdin: input)
            expectStatus(r, 0, block)
            #expect(r.stdout == input, "\(block): every byte once, in order")
            let shape = runMap(["-k", "--pipe", "--block", block, "shape.lua"], files: files, stdin: input)
            let limit = block == "1k" ? 1000 : block == "4K" ? 4096 : block == "10000" ? 10000 : 1 << 20
            for line in shape.lines {
                let parts = line.split(separator: " ")
                #expect(parts.count == 2 && parts[1] == "nl", "\(block): a block ends at a line end: \(line)")
                #expect((Int(parts[0]) ?? .max) <= limit, "\(block): at most the block size: \(line)")
            }
            #expect(shape.lines.count >= input.utf8.count / limit, "\(block)")
        }
    }

    @Test func pipeReadsALongLineWholeAndTagsBlocksWithTheirNumber() {
        let long = String(repeating: "y", count: 5000)
        let input = "a\n\(long)\nb\nc"
        let r = runMap(["-k", "--pipe", "--block", "100", "--tag", "f.lua"],
                       files: ["f.lua": fn("return #l")], stdin: input)
        expectStatus(r)
        #expect(r.lines.count >= 2)
        #expect(r.lines.allSatisfy { $0.split(separator: "\t").count == 2 }, "\(r)")
        let total = r.lines.compactMap { Int($0.split(separator: "\t")[1]) }.reduce(0, +)
        #expect(total == input.utf8.count, "every byte once, the long line in one block")
        #expect(r.lines.first?.hasPrefix("1\t") == true)
        let bad = runMap(["--pipe", "--block", "100", "f.lua"],
                         files: ["f.lua": fn("if l:find('b') then error('no') end")], stdin: input)
        expectStatus(bad, 1)
        #expect(bad.stderr.contains("jobrun map: stdin: block "), "\(bad)")
        #expect(bad.stderr.contains("(lines "), "\(bad)")
    }

    @Test func statsAndStatsJSONWorkAsForAnyRun() throws {
        let dir = ScratchFolder(["f.lua": fn("return l")])
        defer { dir.remove() }
        let r = runJobrun(["map", "--stats", "--stats-json", "s.json", "-j", "2", "f.lua"], stdin: "1\n2\n3\n", cwd: dir.path)
        expectStatus(r)
        #expect(r.stderr.contains("PoolWorker-1"), "\(r)")
        #expect(r.stderr.contains("lines"), "the counter of lines done: \(r)")
        let json = try String(contentsOfFile: dir.file("s.json"), encoding: .utf8)
        #expect(json.contains("\"lines\""), "\(json)")
    }

    @Test func dashJTakesItsNumberAttachedAsInParallel() {
        let r = runMap(["-j2", "-k", "f.lua", "--", "-j3"], files: ["f.lua": fn("return l"), "-j3": "x\n"])
        expectStatus(r)
        #expect(r.stdout == "x\n", "-j2 is -j 2; after --, -j3 is a file")
    }

    @Test func theRunsOptionsAndMinusEWork() {
        let r = runMap(["-e", "greeting = 'hi'", "--no-progress", "-j", "1", "f.lua"],
                       files: ["f.lua": fn("return greeting .. ' ' .. l")], stdin: "x\n")
        expectStatus(r)
        #expect(r.stdout == "hi x\n")
    }

    @Test func theFunctionsUpvaluesAreTheWorkersOwn() {
        // FN.lua runs before the workers are forked: its state is theirs,
        // even what could not be sent (a file handle).
        let body = """
            local f = io.open("data.txt")
            local first = f:read("l")
            local seen = 0
            return function(l) seen = seen + 1; return first .. ":" .. l end
            """
        let r = runMap(["-k", "f.lua"], files: ["f.lua": body, "data.txt": "head\n"], stdin: "1\n2\n")
        expectStatus(r)
        #expect(r.lines == ["head:1", "head:2"])
    }

    @Test func ctrlCStillPrintsStatsAndExits130() {
        // The function, on the line "wait", says the main process's pid
        // (an upvalue from FN.lua's run there) and waits; then Ctrl-C.
        let body = """
            local main = jobrun.current_process().pid
            return function(l)
              if l == "wait" then
                local f = assert(io.open("ready.tmp", "w")); f:write(main); f:close()
                assert(os.rename("ready.tmp", "ready"))
                while true do jobrun.sleep(0.01) end
              end
              return l
            end
            """
        let dir = ScratchFolder(["f.lua": body])
        defer { dir.remove() }
        let command = """
            cd '\(dir.path)' || exit 9
            ( for i in $(seq 400); do [ -s ready ] && break; sleep 0.05; done; kill -INT "$(cat ready)" ) &
            printf 'a\\nwait\\nb\\n' | exec '\(jobrunBinary)' map -j 2 --stats f.lua
            """
        let r = runCommand(["/bin/bash", "-c", command], timeout: 60)
        expectStatus(r, 130, "jobrun dies of SIGINT: its shell says 130")
        #expect(r.stderr.contains("jobrun: run statistics") && r.stderr.contains("PoolWorker-1"), "\(r)")
    }

    /// `tail -f log | jobrun map f.lua`: a result is printed while the input
    /// is still open (stdout is fully buffered, flushed before the map
    /// waits; the map does not sleep in a read while results wait). The
    /// writer keeps stdin open until the first results are in the output
    /// file (bounded: 20 s), then says whether they were.
    @Test(arguments: [["map"], ["map", "--pipe", "--block", "1"]])
    func resultsOfASlowInputAppearBeforeItEnds(_ command: [String]) {
        let dir = ScratchFolder(["f.lua": fn("return l:upper()")])
        defer { dir.remove() }
        let script = """
            cd '\(dir.path)' || exit 9
            {
              printf 'a\\nb\\n'
              seen=no
              for i in $(seq 400); do grep -q B out && { seen=yes; break; }; sleep 0.05; done
              echo "$seen" > seen
              printf 'c\\n'
            } | '\(jobrunBinary)' \(command.joined(separator: " ")) f.lua > out
            """
        let r = runCommand(["/bin/bash", "-c", script], timeout: 60)
        expectStatus(r)
        let seen = (try? String(contentsOfFile: dir.file("seen"), encoding: .utf8)) ?? "(no file)"
        #expect(seen == "yes\n", "the first results were not printed while stdin was open: \(r)")
        let out = (try? String(contentsOfFile: dir.file("out"), encoding: .utf8)) ?? ""
        #expect(out.split(separator: "\n").sorted() == ["A", "B", "C"])
    }

    @Test func aScriptNamedMapRunsWithDotSlashOrRun() {
        let dir = ScratchFolder(["map": "print('the map script', ...)\n"])
        defer { dir.remove() }
        let r = runJobrun(["./map", "x"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        #expect(r.stdout == "the map script\tx\n")
        let r2 = runJobrun(["run", "map", "y"], timeout: 30, cwd: dir.path)
        expectStatus(r2)
        #expect(r2.stdout == "the map script\ty\n")
    }

    @Test func helpNamesEveryOptionAndTheExitStatus() {
        let r = runJobrun(["map", "--help"], timeout: 30)
        #expect(r.status == 0)
        for text in ["-j, --jobs", "-k, --keep-order", "--tag", "--retries", "--timeout", "--halt", "--joblog",
                     "--resume", "--pipe", "--block", "--stats", "Exit status:", "101", "docs/map.md"] {
            #expect(r.stdout.contains(text), "map help lacks \(text)")
        }
        let root = runJobrun(["--help"], timeout: 30)
        #expect(root.stdout.contains("jobrun map"))
    }
}

@Suite("jobrun map: bad input")
struct MapBadInputTests {
    static let files = ["f.lua": fn("return l"), "in.txt": "a\n",
                        "nofn.lua": "local x = 1\n", "number.lua": "return 42\n",
                        "raises.lua": "error('cannot start here')\n", "syntax.lua": "return function(l\n"]

    /// Bad usage or bad input: exit 2, the message on stderr, nothing on stdout.
    private func expectRefused(_ args: [String], _ message: String, stdin: String? = "a\n",
                               sourceLocation: SourceLocation = #_sourceLocation) {
        let r = runMap(args, files: MapBadInputTests.files, stdin: stdin)
        expectStatus(r, 2, args.joined(separator: " "), sourceLocation: sourceLocation)
        #expect(r.stderr.contains(message), "\(args): expected '\(message)'\n\(r)", sourceLocation: sourceLocation)
        #expect(r.stdout == "", "nothing ran: \(r)", sourceLocation: sourceLocation)
    }

    @Test func unreadableInputsAreNamedAndNothingRuns() {
        let r = runMap(["f.lua", "in.txt", "missing.txt", ".", "in.txt"], files: MapBadInputTests.files)
        expectStatus(r, 2)
        #expect(r.stdout == "", "nothing ran, not even in.txt")
        #expect(splitLines(r.stderr) == ["jobrun map: cannot open missing.txt: No such file or directory",
                                         "jobrun map: cannot read .: it is a directory"], "\(r)")
    }

    @Test func aFunctionFileThatIsMissingOrReturnsNoFunction() {
        expectRefused(["missing.lua"], "jobrun map: cannot open missing.lua: No such file or directory")
        expectRefused(["nofn.lua"], "jobrun map: nofn.lua must return a function (it returned nothing): end it with `return function(line) ... end`")
        expectRefused(["number.lua"], "jobrun map: number.lua must return a function (it returned a number)")
        expectRefused(["raises.lua"], "jobrun map: raises.lua raised an error while loading: raises.lua:1: cannot start here")
        expectRefused(["syntax.lua"], "jobrun map: syntax.lua:2:")
        expectRefused(["-"], "FN.lua must be a file")
    }

    @Test func badOptionValues() {
        expectRefused(["-j", "0", "f.lua"], "-j 0: give the number of workers, at least 1")
        expectRefused(["-j", "two", "f.lua"], "-j must be a whole number of workers, at least 1, got 'two'")
        expectRefused(["-j", "-3", "f.lua"], "got '-3'")
        expectRefused(["--timeout", "-1", "f.lua"], "--timeout must be a positive number of seconds, got '-1'")
        expectRefused(["--timeout", "0", "f.lua"], "--timeout must be a positive number of seconds, got '0'")
        expectRefused(["--timeout", "soon", "f.lua"], "--timeout must be a positive number of seconds")
        expectRefused(["--retries", "-1", "f.lua"], "--retries must be a whole number, 0 or more, got '-1'")
        expectRefused(["--halt", "soon", "f.lua"], "--halt must be never, soon,fail=N")
        expectRefused(["--halt", "now,fail=0", "f.lua"], "--halt must be")
        expectRefused(["--halt", "now,fail=120%", "f.lua"], "--halt must be")
        expectRefused(["--resume", "f.lua"], "--resume needs --joblog")
        expectRefused(["--block", "1M", "f.lua"], "--block needs --pipe")
        for size in ["1X", "0", "-5", "M", "2G", "1.5.2k"] {
            expectRefused(["--pipe", "--block", size, "f.lua"], "--block must be a size in bytes")
        }
        expectRefused(["-j", "100000", "f.lua"], "-j 100000: ")
        expectRefused([], "Missing expected argument '<FN.lua>'")
    }

    @Test func blockSizesTakeGNUParallelsUnits() {
        // 1k = 1000 bytes: blocks of whole 10-byte lines hold at most 100 lines.
        let input = String(repeating: "123456789\n", count: 1000)
        let r = runMap(["-k", "--pipe", "--block", "1k", "f.lua"], files: ["f.lua": fn("local _, n = l:gsub('\\n', '') return n")], stdin: input)
        expectStatus(r)
        #expect(r.lines == Array(repeating: "100", count: 10))
        let r2 = runMap(["-k", "--pipe", "--block", "1KiB", "f.lua"], files: ["f.lua": fn("return #l")], stdin: input)
        #expect(r2.lines.first == "1020", "1 KiB = 1024 bytes: 102 whole lines: \(r2)")
    }
}

/// Whether this jobrun's Pool takes the per-item control options of
/// CONTRACT-15 (timeout, retries, halt, on_error, joblog, resume): until it
/// does, MapControlTests is skipped.
let poolHasControlOptions: Bool = {
    let probe = """
        local ok, e = pcall(jobrun.Pool, {workers = 1, retries = -1})
        print(ok or not tostring(type(e) == "table" and e.message or e):find("unknown option", 1, true))
        """
    return runJobrun(["-e", probe], timeout: 30).stdout == "true\n"
}()

@Suite("jobrun map: --retries, --timeout, --halt, --joblog, --resume (need the Pool's control options)",
       .enabled(if: poolHasControlOptions))
struct MapControlTests {
    /// Fails a line the first `failures` times it runs (counted in files
    /// beside it), records every run in ran.txt.
    static let flaky = """
        return function(l)
          local f = io.open("ran.txt", "a"); f:write(l, "\\n"); f:close()
          local name = "tries-" .. l
          local n = tonumber((io.open(name) or io.open("/dev/null")):read("a")) or 0
          local w = io.open(name, "w"); w:write(n + 1); w:close()
          if l:find("^fail") and n < tonumber(l:match("%d+")) then error("attempt " .. (n + 1) .. " of " .. l) end
          return l
        end
        """

    @Test func retriesRunAFailedLineAgain() {
        let dir = ScratchFolder(["f.lua": MapControlTests.flaky])
        defer { dir.remove() }
        let ok = runJobrun(["map", "-k", "--retries", "2", "f.lua"], stdin: "a\nfail2\nb\n", cwd: dir.path)
        expectStatus(ok)
        #expect(ok.lines == ["a", "fail2", "b"])
        let out = runJobrun(["map", "-k", "--retries", "1", "f.lua"], stdin: "fail5\n", cwd: dir.path)
        expectStatus(out, 1)
        #expect(out.stderr.contains("jobrun map: stdin:1 ('fail5'): "), "\(out)")
    }

    @Test func timeoutFailsASlowLineAndTheOthersGoOn() {
        let r = runMap(["-k", "-j", "2", "--timeout", "1", "f.lua"],
                       files: ["f.lua": fn("if l == 'slow' then jobrun.sleep(60) end return l")], stdin: "a\nslow\nb\n", timeout: 50)
        expectStatus(r, 1)
        #expect(r.lines == ["a", "b"])
        #expect(r.stderr.contains("jobrun map: stdin:2 ('slow'): ") && r.stderr.contains("timed out"), "\(r)")
    }

    @Test func aTimedOutLineLeavesNoProcessHoldingStdout() {
        // `jobrun map ... | cat` ends when jobrun does: what the slow line
        // started (a `sleep 60`, holding stdout) is killed with its worker.
        let dir = ScratchFolder(["f.lua": fn("if l == 'slow' then os.execute('sleep 60') end return l")])
        defer { dir.remove() }
        let r = runCommand(["/bin/bash", "-c", "printf 'a\\nslow\\nb\\n' | \"$0\" map -k --timeout 1 f.lua | cat", jobrunBinary],
                           timeout: 30, cwd: dir.path)
        #expect(!r.timedOut, "the pipeline waited for the line's child\n\(r)")
        #expect(r.lines == ["a", "b"], "\(r)")
        #expect(r.stderr.contains("stdin:2 ('slow')") && r.stderr.contains("timed out"), "\(r)")
    }

    @Test func messagesNameTheLineAndTheFileNotThePoolBehindThem() throws {
        let dir = ScratchFolder(["f.lua": fn("if l == 'slow' then jobrun.sleep(60) end return l"), "g.lua": fn("return l")])
        defer { dir.remove() }
        let timed = runJobrun(["map", "-k", "--timeout", "0.5", "--joblog", "log.tsv", "f.lua"], stdin: "a\nslow\n", cwd: dir.path)
        expectStatus(timed, 1)
        #expect(timed.stderr.hasPrefix("jobrun map: stdin:2 ('slow'): jobrun.Timeout: timed out after 0.5 s (pool worker "), "\(timed)")
        let otherFn = runJobrun(["map", "--joblog", "log.tsv", "--resume", "g.lua"], stdin: "a\nslow\n", cwd: dir.path)
        expectStatus(otherFn, 2)
        #expect(otherFn.stderr == "jobrun map: log.tsv: written by another job: its function differs from jobrun map's (g.lua:1); remove the log to start anew\n",
                "\(otherFn)")
        try "2\tx\n".write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        let corrupt = runJobrun(["map", "--joblog", "log.tsv", "--resume", "f.lua"], stdin: "a\n", cwd: dir.path)
        expectStatus(corrupt, 2)
        #expect(corrupt.stderr.contains("jobrun map refuses to resume from it") && !corrupt.stderr.contains("Pool."), "\(corrupt)")
    }

    @Test func theJoblogMayNotBeAnInputOrTheFunctionFile() throws {
        let dir = ScratchFolder(["f.lua": fn("return l"), "in.txt": "a\nb\n"])
        defer { dir.remove() }
        for (log, args) in [("in.txt", ["f.lua", "in.txt"]), ("./f.lua", ["f.lua", "in.txt"])] {
            let r = runJobrun(["map", "--joblog", log] + args, cwd: dir.path)
            expectStatus(r, 2, log)
            #expect(r.stderr.hasPrefix("jobrun map: --joblog \(log) is ") && r.stderr.contains("the log would overwrite it"), "\(r)")
        }
        #expect(try String(contentsOfFile: dir.file("in.txt"), encoding: .utf8) == "a\nb\n", "the input is whole")
        #expect(try String(contentsOfFile: dir.file("f.lua"), encoding: .utf8) == fn("return l"), "the function file is whole")
        // stdin redirected from the log's file: the same.
        let r = runCommand(["/bin/bash", "-c", "\"$0\" map --joblog in.txt f.lua < in.txt", jobrunBinary], cwd: dir.path)
        expectStatus(r, 2, "stdin")
        #expect(try String(contentsOfFile: dir.file("in.txt"), encoding: .utf8) == "a\nb\n", "the input is whole")
    }

    @Test func haltStopsAfterTheFailuresItNames() {
        let input = (1...200).map { $0 % 2 == 0 ? "bad\($0)" : "ok\($0)" }.joined(separator: "\n")
        let r = runMap(["-k", "-j", "1", "--halt", "now,fail=1", "f.lua"],
                       files: ["f.lua": fn("if l:find('bad') then error('no') end return l")], stdin: input)
        #expect(!r.timedOut)
        #expect(r.status >= 1 && r.status <= 101, "\(r)")
        #expect(r.stderr.contains("jobrun map: halted (halt = \"now,fail=1\")"), "\(r)")
        #expect(r.lines.count < 100, "it stopped early: \(r.lines.count) lines")
    }

    @Test func aHaltNowLogsOnlyTheLinesItPrinted() throws {
        // Lines 1-5 arrive with line 6's failure (one worker, one chunk):
        // "now" raises before 5 is printed, so the log must not show it
        // done, or --resume would never print it.
        let dir = ScratchFolder(["f.lua": fn("if l == 'bad6' then error('no') end return l")])
        defer { dir.remove() }
        let input = (1...40).map { $0 == 6 ? "bad6" : "ok\($0)" }.joined(separator: "\n") + "\n"
        let r = runJobrun(["map", "-j", "1", "-k", "--halt", "now,fail=1", "--joblog", "log.tsv", "f.lua"],
                          stdin: input, timeout: 60, cwd: dir.path)
        #expect(!r.timedOut && r.status != 0, "\(r)")
        let done = splitLines(try String(contentsOfFile: dir.file("log.tsv"), encoding: .utf8))
            .filter { !$0.hasPrefix("#") && !$0.hasPrefix("Seq") }
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
            .filter { $0.count == 8 && $0[4] == "0" }.map { "ok" + $0[0] }
        #expect(done.allSatisfy(r.lines.contains), "logged done but not printed: log \(done), printed \(r.lines)")
        let again = runJobrun(["map", "-j", "1", "-k", "--joblog", "log.tsv", "--resume", "f.lua"],
                              stdin: input, timeout: 60, cwd: dir.path)
        expectStatus(again, 1)
        #expect(Set(r.lines + again.lines) == Set((1...40).filter { $0 != 6 }.map { "ok\($0)" }), "\(r)\n\(again)")
    }

    @Test func joblogHasAHeaderAndALinePerInputLine() throws {
        let dir = ScratchFolder(["f.lua": fn("if l == 'bad' then error('no') end return l")])
        defer { dir.remove() }
        let r = runJobrun(["map", "--joblog", "log.tsv", "f.lua"], stdin: "a\nbad\nc\n", cwd: dir.path)
        expectStatus(r, 1)
        let log = splitLines(try String(contentsOfFile: dir.file("log.tsv"), encoding: .utf8))
        #expect(log.first?.hasPrefix("#") == true, "\(log)")
        let rows = log.filter { !$0.hasPrefix("#") }.map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        #expect(rows.count == 3 && rows.allSatisfy { $0.count == 8 }, "\(log)")
        #expect(Set(rows.map { String($0[0]) }) == ["1", "2", "3"])
        #expect(rows.first { $0[0] == "2" }?[4] == "Error", "\(log)")
        #expect(rows.filter { $0[4] == "0" }.count == 2, "\(log)")
    }

    @Test func resumeRunsOnlyWhatTheLogDoesNotShowDone() throws {
        let dir = ScratchFolder(["f.lua": MapControlTests.flaky])
        defer { dir.remove() }
        let first = runJobrun(["map", "-k", "--joblog", "log.tsv", "f.lua"], stdin: "a\nfail1\nb\n", cwd: dir.path)
        expectStatus(first, 1)
        try FileManager.default.removeItem(atPath: dir.file("ran.txt"))
        dir.write("f.lua", "-- edited between the runs: the same job still\n" + MapControlTests.flaky)
        let again = runJobrun(["map", "-k", "--joblog", "log.tsv", "--resume", "f.lua"], stdin: "a\nfail1\nb\n", cwd: dir.path)
        expectStatus(again)
        #expect(again.lines == ["fail1"], "a skipped line prints nothing: \(again)")
        #expect(try String(contentsOfFile: dir.file("ran.txt"), encoding: .utf8) == "fail1\n")
        // Another input at a line the log shows: refused, saying why.
        let other = runJobrun(["map", "-k", "--joblog", "log.tsv", "--resume", "f.lua"], stdin: "a\nzzz\nb\n", cwd: dir.path)
        expectStatus(other, 2)
        #expect(other.stderr.hasPrefix("jobrun map: log.tsv: ") && other.stderr.contains("'zzz'"), "\(other)")
        // A corrupt line: refused, naming the file and the line.
        let saved = try String(contentsOfFile: dir.file("log.tsv"), encoding: .utf8)
        let lineCount = splitLines(saved).count
        try (saved + "garbage\n").write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        let corrupt = runJobrun(["map", "-k", "--joblog", "log.tsv", "--resume", "f.lua"], stdin: "a\nfail1\nb\n", cwd: dir.path)
        expectStatus(corrupt, 2)
        #expect(corrupt.stderr.contains("log.tsv") && corrupt.stderr.contains("\(lineCount + 1)"), "\(corrupt)")
        try saved.write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        // Another function: refused.
        dir.write("g.lua", fn("return l .. '!'"))
        let otherFn = runJobrun(["map", "--joblog", "log.tsv", "--resume", "g.lua"], stdin: "a\nfail1\nb\n", cwd: dir.path)
        expectStatus(otherFn, 2)
        #expect(otherFn.stderr.contains("another job"), "\(otherFn)")
    }
}

@Suite("docs/map.md")
struct MapDocTests {
    static let doc = (try? String(contentsOf: packageRoot.appendingPathComponent("docs/map.md"), encoding: .utf8)) ?? ""

    @Test func everyOptionOfTheHelpIsDocumented() throws {
        let help = runJobrun(["map", "--help"], timeout: 30).stdout
        let option = try Regex(#"--[a-z][a-z-]+"#)
        let names = Set(help.matches(of: option).map { String(help[$0.range]) })
        #expect(names.count > 12, "\(names)")
        for name in names where name != "--help" && name != "--version" {
            #expect(Self.doc.contains(name), "docs/map.md does not mention \(name)")
        }
        for word in ["GNU parallel", "xargs", "| 101 |", "-j 0"] { #expect(Self.doc.contains(word), "\(word)") }
    }

    @Test func theFirstExampleRunsAsShown() {
        let r = runMap(["-k", "upper.lua"], files: ["upper.lua": "return function(line) return line:upper() end\n"], stdin: "a\nb\n")
        expectStatus(r)
        #expect(r.stdout == "A\nB\n")
        #expect(Self.doc.contains("return function(line) return line:upper() end\n$ printf 'a\\nb\\n' | jobrun map -k upper.lua\nA\nB\n"))
    }

    @Test func theReadmeAndTheReferenceLinkToIt() throws {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("](docs/map.md)") && readme.contains("jobrun map"))
        let api = try String(contentsOf: packageRoot.appendingPathComponent("docs/api.md"), encoding: .utf8)
        #expect(api.contains("](map.md)"))
    }
}
