import Foundation
import Testing

// The Lua half of the module (Sources/JobrunCore/prelude/*.lua) is embedded
// at build time and loaded under its file's name: a traceback through it
// names the file and a line that is really there. Users' tracebacks leave
// those frames out; JOBRUN_INTERNAL_FRAMES=1 keeps them.

@Suite("Prelude files")
struct PreludeTests {
    /// The places `jobrun/prelude/<file>:<line>` in `text`, as (file, line).
    func preludePlaces(_ text: String) -> [(file: String, line: Int)] {
        var places: [(String, Int)] = []
        var rest = Substring(text)
        while let r = rest.range(of: #"jobrun/prelude/[a-z_]+\.lua:[0-9]+"#, options: .regularExpression) {
            let parts = rest[r].dropFirst("jobrun/prelude/".count).split(separator: ":")
            places.append((String(parts[0]), Int(parts[1])!))
            rest = rest[r.upperBound...]
        }
        return places
    }

    /// Line `n` (1-based) of a prelude file in the source tree.
    func sourceLine(_ file: String, _ n: Int) -> String {
        let path = packageRoot.appendingPathComponent("Sources/JobrunCore/prelude/\(file)").path
        let lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false)
        return n >= 1 && n <= lines.count ? String(lines[n - 1]) : ""
    }

    @Test func aBadPoolArgumentsTracebackNamesPoolLua() {
        // pool.lua checks chunksize and raises at the caller's line; the
        // traceback walks through pool.lua's own frames on the way.
        let code = """
            local pool = jobrun.Pool{workers = 1}
            pool:map(function(x) return x end, {1}, 0)
            """
        let plain = runScript(code)
        #expect(plain.status == 1)
        #expect(preludePlaces(plain.stderr).isEmpty, "a user's traceback shows no prelude frame: \(plain.stderr)")
        let r = runScript(code, environment: ["JOBRUN_INTERNAL_FRAMES": "1"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:2: jobrun.ValueError: Pool.map: chunksize must be a positive integer, got 0"), "\(r.stderr)")
        let places = preludePlaces(r.stderr)
        #expect(places.contains { $0.file == "pool.lua" }, "\(r.stderr)")
        // The innermost pool.lua frame is the check, at the line that raises.
        if let check = places.first(where: { $0.file == "pool.lua" }) {
            #expect(sourceLine("pool.lua", check.line).contains("raise(\"ValueError\""),
                    "pool.lua:\(check.line) is \(sourceLine("pool.lua", check.line))")
        }
    }

    @Test func aBadProcessOptionsTracebackNamesProcessLua() {
        let r = runScript("""
            local p = jobrun.Process(5)
            """, environment: ["JOBRUN_INTERNAL_FRAMES": "1"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:1: jobrun.TypeError: Process: expected a table of options"), "\(r.stderr)")
        let check = preludePlaces(r.stderr).first { $0.file == "process.lua" }
        #expect(check != nil, "\(r.stderr)")
        if let check {
            #expect(sourceLine("process.lua", check.line).contains("raise(\"TypeError\", \"Process: expected a table"),
                    "process.lua:\(check.line) is \(sourceLine("process.lua", check.line))")
        }
    }
}
