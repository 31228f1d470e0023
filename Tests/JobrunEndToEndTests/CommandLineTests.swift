import Foundation
import Testing

@Suite("jobrun check")
struct CheckCommandTests {
    @Test func goodScriptsAreOk() {
        let dir = ScratchFolder(["a.lua": "print(1)\n", "b.lua": "#!/usr/bin/env jobrun\nlocal x = ...\n"])
        defer { dir.remove() }
        let r = runJobrun(["check", "a.lua", "b.lua"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        expectLines(r, [
            "a good script is ok": "a.lua: ok",
            "a script with a #! line is ok": "b.lua: ok",
        ])
        #expect(r.stderr == "")
    }

    @Test func syntaxErrorIsReportedAndNothingRuns() {
        let dir = ScratchFolder(["good.lua": "print('ran')\n", "bad.lua": "print('ran')\nlocal y = = 2\n"])
        defer { dir.remove() }
        let r = runJobrun(["check", "good.lua", "bad.lua"], timeout: 30, cwd: dir.path)
        #expect(r.status == 1)
        #expect(r.stdout == "good.lua: ok\n")
        #expect(r.stderr == "bad.lua:2: unexpected symbol near '='\n")
        #expect(!r.stdout.contains("ran"))
    }

    @Test func unreadableFileExits2AndTheOthersAreStillChecked() {
        let dir = ScratchFolder(["bad.lua": "local = 1\n", "good.lua": "return 1\n"])
        defer { dir.remove() }
        let r = runJobrun(["check", "missing.lua", "bad.lua", "good.lua"], timeout: 30, cwd: dir.path)
        #expect(r.status == 2)
        #expect(r.stderr.contains("cannot open missing.lua"))
        #expect(r.stderr.contains("bad.lua:1:"))
        #expect(r.stdout == "good.lua: ok\n")
    }

    @Test func checkWithoutScriptsIsBadUsage() {
        let r = runJobrun(["check"], timeout: 30)
        #expect(r.status == 2)
        #expect(r.stderr.contains("Usage: jobrun check"))
    }

    @Test func aScriptNamedCheckRunsWithDotSlashOrRun() {
        let dir = ScratchFolder(["check": "print('the check script', ...)\n"])
        defer { dir.remove() }
        let r = runJobrun(["./check", "x"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        #expect(r.stdout == "the check script\tx\n")
        let r2 = runJobrun(["run", "check", "y"], timeout: 30, cwd: dir.path)
        expectStatus(r2)
        #expect(r2.stdout == "the check script\ty\n")
    }
}

@Suite("jobrun -e")
struct ChunkOptionTests {
    @Test func chunksAloneRunInOrderWithTheModule() {
        let r = runJobrun(["-e", "x = 20", "-e", "print(x + 1, type(jobrun.Queue))"], timeout: 30)
        expectStatus(r)
        #expect(r.stdout == "21\tfunction\n")
    }

    @Test func chunksMayStartWorkers() {
        let r = runJobrun(["-e", """
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function() q:put(6 * 7) end}
            p:start(); print(q:get(true, 10)); p:join(10); print(p.exitcode)
            """], timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "a -e chunk may start a worker and get its item": "42",
            "the worker ends with 0": "0",
        ])
    }

    @Test func chunksRunBeforeTheScriptAndLaterDashEIsTheScripts() {
        let r = runScript("print(greeting, ...)", args: ["-e", "--flag"])
        #expect(r.stdout == "nil\t-e\t--flag\n")
        let dir = ScratchFolder(["main.lua": "print(greeting, ...)\n"])
        defer { dir.remove() }
        let r2 = runJobrun(["-e", "greeting = 'hi'", "main.lua", "-e", "x"], timeout: 30, cwd: dir.path)
        expectStatus(r2)
        #expect(r2.stdout == "hi\t-e\tx\n")
    }

    @Test func chunkMayLookLikeAnOption() {
        let r = runJobrun(["-e", "-- just a comment", "-e", "print('after')"], timeout: 30)
        expectStatus(r)
        #expect(r.stdout == "after\n")
    }

    @Test func errorsNameTheCommandLineAndStopTheRun() {
        let r = runJobrun(["-e", "error('boom')", "-e", "print('not reached')"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("(command line):1: boom"))
        #expect(r.stdout == "")
        let s = runJobrun(["-e", "local x = = 1"], timeout: 30)
        #expect(s.status == 1)
        #expect(s.stderr.contains("(command line):1: unexpected symbol near '='"))
        let t = runScript("print('script ran')")
        #expect(t.stdout == "script ran\n")
    }

    @Test func neitherScriptNorChunkIsBadUsage() {
        let r = runJobrun([], timeout: 30)
        #expect(r.status == 2)
        #expect(r.stderr.contains("Missing expected argument '<script>'"))
    }
}

@Suite("jobrun --prefix")
struct PrefixOptionTests {
    @Test func forkedWorkerLinesCarryItsName() {
        let dir = ScratchFolder(["main.lua": """
            print("from main")
            local p = jobrun.Process{name = "worker-1", target = function()
              print("hello", 1)
              io.write("partial ", 2, " ")
              io.write("line\\nnext\\n")
              io.stdout:write("via io.stdout\\n")
              io.stderr:write("to stderr\\n")
            end}
            p:start(); p:join(10)
            print("main again")
            """])
        defer { dir.remove() }
        let r = runJobrun(["--prefix", "main.lua"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        expectLines(r, [
            "main's lines have no prefix": "from main",
            "a worker's print carries its name": "[worker-1] hello\t1",
            "partial writes are joined into one prefixed line": "[worker-1] partial 2 line",
            "each line of one write is prefixed": "[worker-1] next",
            "io.stdout:write is prefixed too": "[worker-1] via io.stdout",
            "main's lines after the worker have no prefix": "main again",
        ])
        #expect(r.stderr == "[worker-1] to stderr\n")
    }

    @Test func scriptWorkerAndItsChildrenCarryTheirNames() {
        let dir = ScratchFolder([
            "main.lua": """
                local p = jobrun.Process{name = "stage-1", script = "stage.lua", args = {"x"}}
                p:start(); p:join(20); print(p.exitcode)
                """,
            "stage.lua": """
                print("hello", ...)
                local c = jobrun.Process{name = "inner", target = function() print("from inner") end}
                c:start(); c:join(10)
                error("stage fails")
                """,
        ])
        defer { dir.remove() }
        let r = runJobrun(["--prefix", "main.lua"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        expectLines(r, [
            "a script worker's lines carry its name": "[stage-1] hello\tx",
            "its child's lines carry the child's name": "[inner] from inner",
            "main's own lines have no prefix": "1",
        ])
        #expect(r.stderr.hasPrefix("[stage-1] Process stage-1 (pid "))
        #expect(r.stderr.contains("stage.lua:4: stage fails"))
        for line in r.stderr.split(separator: "\n") { #expect(line.hasPrefix("[stage-1] ")) }
    }

    @Test func withoutPrefixOutputIsUntouched() {
        let r = runScript("""
            local p = jobrun.Process{name = "worker-1", target = function() print("hello") end}
            p:start(); p:join(10)
            """)
        #expect(r.stdout == "hello\n")
    }
}

@Suite("Arguments, help and completion")
struct CommandLineTests {
    @Test func optionLikeScriptArgumentsPassThroughVerbatim() {
        let r = runScript("print(select('#', ...), ...)", args: ["--flag", "-x", "--help", "--version", "--shm-limit", "check", "--", "-e"])
        expectStatus(r)
        #expect(r.stdout == "8\t--flag\t-x\t--help\t--version\t--shm-limit\tcheck\t--\t-e\n")
    }

    @Test func optionsBeforeTheScriptAreJobruns() {
        let dir = ScratchFolder(["main.lua": "print(...)\n"])
        defer { dir.remove() }
        let r = runJobrun(["--shm-limit", "8", "--prefix", "main.lua", "a"], timeout: 30, cwd: dir.path)
        expectStatus(r)
        #expect(r.stdout == "a\n")
        let bad = runJobrun(["--no-such-option", "main.lua"], timeout: 30, cwd: dir.path)
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("Unknown option '--no-such-option'"))
    }

    @Test func helpShowsUsageExamplesAndExitStatuses() {
        let r = runJobrun(["--help"], timeout: 30)
        #expect(r.status == 0)
        for text in ["USAGE: jobrun", "jobrun check <script> ...", "--prefix", "-e <code>", "--shm-limit",
                     "Examples:", "Exit status:", "os.exit(n)", "128+N", "bad usage",
                     "--generate-completion-script"] {
            #expect(r.stdout.contains(text), "help lacks \(text)")
        }
        #expect(!r.stdout.contains("--worker"))
        let run = runJobrun(["help", "run"], timeout: 30)
        #expect(run.status == 0)
        #expect(run.stdout.contains("--shm-limit <MiB>"))
        #expect(!run.stdout.contains("--worker"))
        let check = runJobrun(["check", "--help"], timeout: 30)
        #expect(check.status == 0)
        #expect(check.stdout.contains("USAGE: jobrun check <script> ..."))
    }

    @Test func versionPrintsTheVersion() {
        let r = runJobrun(["--version"], timeout: 30)
        #expect(r.status == 0)
        #expect(r.stdout.first?.isNumber == true)
    }

    @Test func completionScriptsAreGenerated() {
        for shell in ["bash", "zsh", "fish"] {
            let r = runJobrun(["--generate-completion-script", shell], timeout: 30)
            #expect(r.status == 0, "\(shell): \(r.stderr)")
            #expect(r.stdout.contains("check"), "\(shell)")
            #expect(r.stdout.contains("shm-limit"), "\(shell)")
        }
        // The bash script must at least parse.
        let dir = ScratchFolder(["jobrun.bash": runJobrun(["--generate-completion-script", "bash"], timeout: 30).stdout])
        defer { dir.remove() }
        let syntax = runCommand(["/bin/bash", "-n", dir.path + "/jobrun.bash"], timeout: 30)
        expectStatus(syntax)
    }

    /// What bash offers for `line` (the words so far, the last one being
    /// completed) in a folder holding a.lua, notes.txt and sub/.
    private func bashCompletions(_ words: [String]) -> [String] {
        let dir = ScratchFolder(["jobrun.bash": runJobrun(["--generate-completion-script", "bash"], timeout: 30).stdout,
                                 "a.lua": "", "notes.txt": "", "sub/b.lua": ""])
        defer { dir.remove() }
        let quoted = words.map { "'" + $0 + "'" }.joined(separator: " ")
        let line = words.joined(separator: " ")
        let driver = """
            cd '\(dir.path)' || exit 9
            source ./jobrun.bash || exit 9
            COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1)
            COMP_LINE='\(line)'; COMP_POINT=${#COMP_LINE}
            _jobrun jobrun '\(words.last ?? "")' '\(words.count > 1 ? words[words.count - 2] : "")'
            printf '%s\\n' "${COMPREPLY[@]}" | sort -u
            """
        let r = runCommand(["/bin/bash", "-c", driver], timeout: 30)
        #expect(r.status == 0, "\(r)")
        return r.lines
    }

    @Test func theDefaultFormCompletesAsRunDoes() {
        guard FileManager.default.isExecutableFile(atPath: "/bin/bash") else { return }
        // `jobrun <Tab>`: the subcommands, .lua files and folders (not other files).
        let first = bashCompletions(["jobrun", ""])
        for word in ["run", "check", "map", "help", "a.lua", "sub"] { #expect(first.contains(word), "\(word) not offered: \(first)") }
        #expect(!first.contains("notes.txt"), "\(first)")
        // The same files as `jobrun run <Tab>`.
        let run = bashCompletions(["jobrun", "run", ""])
        #expect(run.contains("a.lua") && run.contains("sub") && !run.contains("notes.txt"), "\(run)")
        // `jobrun --st<Tab>`: run's options.
        #expect(bashCompletions(["jobrun", "--st"]) == ["--stats", "--stats-json"])
        #expect(bashCompletions(["jobrun", "run", "--st"]) == ["--stats", "--stats-json"])
        // After an option, still run's: the script, then nothing (its own arguments).
        let afterOption = bashCompletions(["jobrun", "--stats", ""])
        #expect(afterOption.contains("a.lua") && !afterOption.contains("run") && !afterOption.contains("notes.txt"), "\(afterOption)")
        // An option's value: any file.
        #expect(bashCompletions(["jobrun", "--stats-json", "no"]) == ["notes.txt"])
        // The other subcommands are untouched.
        #expect(bashCompletions(["jobrun", "check", "--h"]) == ["--help"])
        // `jobrun map`: its options, then the function's .lua file.
        #expect(bashCompletions(["jobrun", "map", "--ke"]) == ["--keep-order"])
        let mapFirst = bashCompletions(["jobrun", "map", ""])
        #expect(mapFirst.contains("a.lua") && mapFirst.contains("sub") && !mapFirst.contains("notes.txt"), "\(mapFirst)")
    }

    @Test func zshAndFishScriptsCompleteTheDefaultForm() {
        let zsh = runJobrun(["--generate-completion-script", "zsh"], timeout: 30).stdout
        #expect(zsh.contains("`run` is the default subcommand"), "the zsh patch applies to this generator's script")
        #expect(zsh.contains("_jobrun_run && default_ret=0"))
        let fish = runJobrun(["--generate-completion-script", "fish"], timeout: 30).stdout
        #expect(fish.contains("set unparsed_tokens $unparsed_tokens[1] run $unparsed_tokens[2..]"),
                "the fish patch applies to this generator's script")
        #expect(fish.contains("completions_for_flags_or_options \"jobrun\" stats' -l 'stats'"))
        #expect(fish.contains("completions_for_positional \"jobrun\" -eq 1' -fa '(for p in"), "first word: .lua files")
        // Where the shells are installed, the scripts at least parse.
        for (shell, text) in [("/usr/bin/zsh", zsh), ("/usr/bin/fish", fish)] where FileManager.default.isExecutableFile(atPath: shell) {
            let dir = ScratchFolder(["script": text])
            defer { dir.remove() }
            expectStatus(runCommand([shell, "-n", dir.file("script")], timeout: 30), 0, shell)
        }
    }
}
