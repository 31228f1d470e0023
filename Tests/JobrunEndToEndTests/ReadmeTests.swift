import Foundation
import Testing

/// The README's "One example per object" snippets run as they are and print
/// what their `-->` comments say (whitespace runs compared as one space), so
/// the documentation cannot drift from the program.
@Suite("README examples")
struct ReadmeTests {
    static func snippets() -> [String] {
        let readme = (try? String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)) ?? ""
        guard let start = readme.range(of: "### One example per object"),
              let end = readme.range(of: "\n## ", range: start.upperBound..<readme.endIndex)
                ?? readme.range(of: "\nItems are any sendable value", range: start.upperBound..<readme.endIndex) else { return [] }
        var out: [String] = []
        var rest = readme[start.upperBound..<end.lowerBound]
        while let open = rest.range(of: "```lua\n"), let close = rest.range(of: "```", range: open.upperBound..<rest.endIndex) {
            out.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return out
    }

    private static func squeeze(_ s: Substring) -> String {
        s.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    @Test func everyObjectHasARunningExample() {
        let blocks = Self.snippets()
        #expect(blocks.count >= 15, "found \(blocks.count) snippets")
        for word in ["jobrun.Process{target", "Process{script", "jobrun.Queue(", "jobrun.JoinableQueue(", "jobrun.Lock(",
                     "jobrun.RLock(", "jobrun.Semaphore(", "jobrun.BoundedSemaphore(", "jobrun.Event(", "jobrun.Barrier(",
                     "jobrun.Condition(", "jobrun.Dict", "jobrun.Value(", "jobrun.Pipe(", "jobrun.Pool{", "jobrun.progress("] {
            #expect(blocks.contains { $0.contains(word) }, "no example uses \(word)")
        }
    }

    @Test(arguments: Self.snippets().indices)
    func snippetPrintsWhatItsCommentsSay(_ i: Int) {
        let code = Self.snippets()[i]
        let expected = code.split(separator: "\n").compactMap { line -> String? in
            guard let r = line.range(of: "--> ") else { return nil }
            return Self.squeeze(line[r.upperBound...])
        }
        let r = runScript(code, files: ["stage.lua": "local q, factor = ...\nq:put(factor * 7)\n"], timeout: 60)
        #expect(r.status == 0, "snippet \(i):\n\(code)\n\(r.stderr)")
        let got = r.stdout.split(separator: "\n").map { Self.squeeze($0) }
        #expect(got == expected, "snippet \(i):\n\(code)")
    }
}
