import Foundation
import Testing

// Runs every examples/*.lua with the built binary and compares its standard
// output with examples/<name>.expected and its exit status with 0 or the
// `-- exit:` directive. Examples are discovered at run time, so a new one is
// checked as soon as it and its .expected file exist.
//
// Directives are comment lines at the top of the script, before its first
// line that is not a comment (see examples/README.md):
//
//   -- expect: unordered   compare stdout as sorted lines (default: exact)
//   -- args: a b c         arguments after the script (split on spaces);
//                          the run's working directory is the package root
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

    /// The text as compared: masks applied per line, then sorted when unordered.
    func normalize(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let endsWithNewline = lines.last == ""
        if endsWithNewline { lines.removeLast() }
        if !masks.isEmpty {
            lines = lines.map { line in
                masks.reduce(line) { l, re in
                    re.stringByReplacingMatches(in: l, range: NSRange(l.startIndex..., in: l), withTemplate: "*")
                }
            }
        }
        if unordered { lines.sort() }
        return lines.joined(separator: "\n") + (endsWithNewline ? "\n" : "")
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

/// The first line where `a` and `b` differ, for a short failure message.
private func firstDifference(_ a: String, _ b: String) -> String {
    let la = a.split(separator: "\n", omittingEmptySubsequences: false)
    let lb = b.split(separator: "\n", omittingEmptySubsequences: false)
    for i in 0..<max(la.count, lb.count) {
        let x = i < la.count ? String(la[i]) : "<end of output>"
        let y = i < lb.count ? String(lb[i]) : "<end of output>"
        if x != y { return "line \(i + 1): expected \(x.debugDescription), got \(y.debugDescription)" }
    }
    return "no line differs (line endings?)"
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
        let source = try String(contentsOf: script, encoding: .utf8)
        let spec = try ExampleSpec.parse(source, name: name)
        guard let expectedData = FileManager.default.contents(atPath: expectedURL.path) else {
            Issue.record("examples/\(name) has no examples/\(expectedURL.lastPathComponent)")
            return
        }
        let expected = String(decoding: expectedData, as: UTF8.self)

        let run = runJobrun(["examples/\(name)"] + spec.args, timeout: 60, cwd: packageRoot.path)
        let stderrNote = run.stderr.isEmpty ? "(stderr is empty)" : "stderr:\n\(run.stderr)"
        if run.timedOut {
            Issue.record("examples/\(name) did not finish within 60 s and was killed\nstdout so far:\n\(run.stdout)\n\(stderrNote)")
            return
        }

        #expect(run.status == spec.exit, "examples/\(name): exit status \(run.status), expected \(spec.exit)\n\(stderrNote)")

        let want = spec.normalize(expected)
        let got = spec.normalize(run.stdout)
        let how = spec.unordered ? "sorted lines" : "exact"
        #expect(got == want, """
            examples/\(name): stdout differs from \(expectedURL.lastPathComponent) (\(how)\(spec.masks.isEmpty ? "" : ", masked")): \
            \(firstDifference(want, got))
            --- expected (as compared)
            \(want)
            --- got (as compared)
            \(got)
            --- got (raw)
            \(run.stdout)
            \(stderrNote)
            """)
    }
}
