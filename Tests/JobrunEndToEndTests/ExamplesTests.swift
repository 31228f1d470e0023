import Foundation
import Testing

// Runs every examples/*.lua with the built binary through `assertExecute`
// (Support/Jobrun.swift), which compares its standard output with
// examples/<name>.expected and its exit status with 0 or the `-- exit:`
// directive, and shows a line diff on a mismatch. Examples are discovered at
// run time, so a new one is checked as soon as it and its .expected file exist.
//
// Directives are comment lines at the top of the script, before its first
// line that is not a comment (see examples/README.md):
//
//   -- expect: unordered   compare stdout as sorted lines (default: exact)
//   -- args: a b c         arguments after the script (split on spaces);
//                          the run's working directory is the package root
//   -- map: OPTIONS        the file is a function file for `jobrun map`: run
//                          `jobrun map OPTIONS examples/NAME.lua ARGS` (ARGS
//                          of `-- args:`, the inputs); OPTIONS may be empty
//   -- exit: N             expected exit status (default 0)
//   -- mask: REGEX         before comparing, replace every match of REGEX
//                          (NSRegularExpression, per line) with "*" in both
//                          the output and the .expected file; for what a run
//                          cannot fix, such as pids or which worker took an
//                          item. May be repeated.

/// What the directives of one example ask for.
struct ExampleSpec {
    var unordered = false
    var args: [String] = []
    var exit: Int32 = 0
    var masks: [NSRegularExpression] = []
    /// The options of `jobrun map` when the file is a function file for it.
    var map: [String]?

    struct BadDirective: Error, CustomStringConvertible {
        let description: String
    }

    static func parse(_ source: String, name: String) throws -> ExampleSpec {
        var spec = ExampleSpec()
        for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#!") { continue }
            guard line.hasPrefix("--") else { break }
            let body = line.dropFirst(2).trimmingCharacters(in: .whitespaces)
            guard let colon = body.firstIndex(of: ":") else { continue }
            let key = String(body[..<colon])
            let value = body[body.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "expect":
                switch value {
                case "unordered": spec.unordered = true
                case "exact": spec.unordered = false
                default: throw BadDirective(description: "\(name): unknown `-- expect: \(value)` (use unordered or exact)")
                }
            case "args":
                spec.args = value.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            case "exit":
                guard let n = Int32(value) else { throw BadDirective(description: "\(name): `-- exit: \(value)` is not a number") }
                spec.exit = n
            case "map":
                spec.map = value.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            case "mask":
                do {
                    spec.masks.append(try NSRegularExpression(pattern: value))
                } catch {
                    throw BadDirective(description: "\(name): `-- mask: \(value)` is not a valid regular expression: \(error)")
                }
            default:
                continue  // an ordinary comment that happens to hold a colon
            }
        }
        return spec
    }
}

enum Examples {
    static var folder: URL { packageRoot.appendingPathComponent("examples") }

    /// The example scripts, by file name, sorted.
    static func scripts() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".lua") }.sorted()
    }
}

@Suite("Examples")
struct ExamplesTests {
    @Test("examples/ holds examples")
    func examplesExist() {
        #expect(!Examples.scripts().isEmpty, "no examples/*.lua under \(Examples.folder.path)")
    }

    @Test("example runs and prints its .expected output", arguments: Examples.scripts())
    func example(_ name: String) throws {
        let script = Examples.folder.appendingPathComponent(name)
        let expectedURL = script.deletingPathExtension().appendingPathExtension("expected")
        let spec = try ExampleSpec.parse(try String(contentsOf: script, encoding: .utf8), name: name)
        let expected = try #require(FileManager.default.contents(atPath: expectedURL.path),
                                    "examples/\(name) has no examples/\(expectedURL.lastPathComponent)")
        let (command, args) = spec.map.map { ("map", $0 + ["examples/\(name)"] + spec.args) } ?? ("examples/\(name)", spec.args)
        assertExecute(command, args, expecting: String(decoding: expected, as: UTF8.self),
                      exitCode: spec.exit, unordered: spec.unordered, masks: spec.masks)
    }
}

/// examples/data/make_logs.lua wrote the sample logs of grep_count.lua and
/// access_report.lua; running it again (in a scratch copy, by jobrun, which
/// runs plain Lua) makes the same text, so the committed data, gzipped files
/// included, can be reviewed and regenerated. The .gz files are compared
/// decompressed: gzip's bytes may differ between its versions.
@Suite("Example data")
struct ExampleDataTests {
    static let logs = ["app-logs/api/2026-11-29.log", "app-logs/api/2026-11-30.log",
                       "app-logs/billing/2026-11-29.log", "app-logs/billing/2026-11-30.log",
                       "app-logs/worker/2026-11-30.log", "app-logs/worker/archive/2026-11-28.log",
                       "access/web-1.log.gz", "access/web-2.log.gz", "access/web-3.log.gz"]

    /// The text of a log: a .gz file through `gzip -dc`.
    static func text(_ path: String) -> String? {
        if path.hasSuffix(".gz") {
            let r = runCommand(["/bin/sh", "-c", "exec gzip -dc \"$0\"", path], timeout: 30)
            return r.status == 0 ? r.stdout : nil
        }
        return (try? Data(contentsOf: URL(fileURLWithPath: path))).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func theGeneratorMakesTheCommittedLogs() throws {
        let data = Examples.folder.appendingPathComponent("data")
        let dir = ScratchFolder(prefix: "jobrun-example-data")
        defer { dir.remove() }
        try dir.copy(data.appendingPathComponent("make_logs.lua"))
        let r = runJobrun([dir.file("make_logs.lua")], timeout: 60, cwd: dir.path)
        try #require(r.status == 0, "make_logs.lua failed: \(r)")
        for name in Self.logs {
            let committed = try #require(Self.text(data.appendingPathComponent(name).path), "examples/data/\(name) is missing")
            let made = try #require(Self.text(dir.file(name)), "make_logs.lua did not write \(name)")
            let same = made == committed   // not in the #expect: it would print both files
            #expect(same, "examples/data/\(name) is not what make_logs.lua makes: run `lua5.4 examples/data/make_logs.lua`")
            #expect(committed.split(separator: "\n").count >= 100, "examples/data/\(name) is too short to be a sample")
        }
    }
}
