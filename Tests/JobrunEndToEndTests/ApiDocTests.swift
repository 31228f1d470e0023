import Foundation
import Testing

/// docs/api.md is the complete reference of the Lua API: every public name
/// of the `jobrun` module and every public method of every object type is
/// mentioned there (`jobrun.name`, `Type:method`), its Lua blocks run and
/// print what their `-->` comments say, and no document of the repository
/// links outside it.
@Suite("docs/api.md")
struct ApiDocTests {
    static let apiURL = packageRoot.appendingPathComponent("docs/api.md")

    /// Lists `module <name>` for each public field of the module table and
    /// `method <Type> <name>` for each public method of an object of each
    /// type, found by walking the metatables: `__index` when it is a table;
    /// when it is a function (Process, Pool), the tables among its upvalues,
    /// keeping the names the object really answers with that same function;
    /// `__methods` (Dict). Names starting with `_` are private.
    static let walker = #"""
    local out, listed = {}, {}
    for k in pairs(jobrun) do
      if type(k) == "string" and k:sub(1, 1) ~= "_" then out[#out + 1] = "module " .. k end
    end
    local function methods(obj)
      local mt = getmetatable(obj)
      local tname = tostring(rawget(mt, "__name")):gsub("^jobrun%.", "")
      local function add(t)
        for k, v in pairs(t) do
          local line = "method " .. tname .. " " .. tostring(k)
          if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" and not listed[line] then
            local ok, got = pcall(function() return obj[k] end)
            if ok and rawequal(got, v) then listed[line] = true; out[#out + 1] = line end
          end
        end
      end
      local idx = rawget(mt, "__index")
      if type(idx) == "table" then add(idx) end
      if type(idx) == "function" then
        for i = 1, 255 do
          local n, v = debug.getupvalue(idx, i)
          if not n then break end
          if type(v) == "table" and v ~= jobrun then add(v) end
        end
      end
      if type(rawget(mt, "__methods")) == "table" then add(mt.__methods) end
      if not listed[tname] then listed[tname] = true; out[#out + 1] = "type " .. tname end
    end
    local pool = jobrun.Pool(1)
    local a = jobrun.Pipe()
    local q = jobrun.Queue()
    local _, err = pcall(q.get, q, false)
    for _, o in ipairs{q, jobrun.JoinableQueue(), jobrun.Lock(), jobrun.RLock(), jobrun.Semaphore(),
                       jobrun.BoundedSemaphore(), jobrun.Event(), jobrun.Barrier(1), jobrun.Condition(),
                       jobrun.Dict(), jobrun.Value(), a, jobrun.Process{target = print}, jobrun.current_process(),
                       pool, pool:apply_async(print), err} do
      methods(o)
    end
    pool:terminate()
    table.sort(out)
    print(table.concat(out, "\n"))
    """#

    /// Types that have every method of another, documented once under it
    /// ("A JoinableQueue has every Queue method").
    static let sharesMethodsOf = ["JoinableQueue": "Queue", "RLock": "Lock", "BoundedSemaphore": "Semaphore"]

    /// Whether the doc names `name` in backticks: "`name`", "`name(", "`name{".
    static func mentions(_ doc: String, _ name: String) -> Bool {
        ["`", "(", "{"].contains { doc.contains("`" + name + $0) }
    }

    @Test func everyPublicNameIsDocumented() throws {
        let doc = try String(contentsOf: Self.apiURL, encoding: .utf8)
        let r = runScript(Self.walker, timeout: 60)
        #expect(r.status == 0 && !r.timedOut, "\(r)")
        let lines = r.lines
        let modules = lines.filter { $0.hasPrefix("module ") }.map { String($0.dropFirst(7)) }
        let types = Set(lines.filter { $0.hasPrefix("type ") }.map { String($0.dropFirst(5)) })
        // The walk itself found what it should: a broken walk must not pass as "all documented".
        #expect(modules.count >= 30 && modules.contains("Pool") && modules.contains("sleep"), "\(r)")
        #expect(types.isSuperset(of: ["Queue", "JoinableQueue", "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event",
                                      "Barrier", "Condition", "Dict", "Value", "Connection", "Process", "Pool", "AsyncResult",
                                      "Error"]), "\(types)")
        var missing: [String] = []
        for name in modules where !Self.mentions(doc, "jobrun." + name) {
            missing.append("jobrun." + name)
        }
        var methodCount = 0
        for line in lines where line.hasPrefix("method ") {
            let parts = line.split(separator: " ").map(String.init)
            let (type, method) = (parts[1], parts[2])
            methodCount += 1
            if Self.mentions(doc, "\(type):\(method)") { continue }
            if let base = Self.sharesMethodsOf[type], Self.mentions(doc, "\(base):\(method)") { continue }
            missing.append("\(type):\(method)")
        }
        #expect(methodCount >= 80, "\(r)")
        #expect(missing.isEmpty, "docs/api.md does not mention: \(missing.map { "`\($0)`" }.joined(separator: ", "))")
    }

    /// The Lua blocks of docs/api.md, in order.
    static func blocks() -> [String] {
        let doc = (try? String(contentsOf: apiURL, encoding: .utf8)) ?? ""
        return doc.components(separatedBy: "```lua\n").dropFirst().map { $0.components(separatedBy: "```")[0] }
    }

    private static func squeeze(_ s: Substring) -> String {
        s.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    @Test func thereAreBlocks() { #expect(Self.blocks().count >= 15) }

    @Test(arguments: Self.blocks().indices)
    func blockPrintsWhatItsCommentsSay(_ i: Int) {
        let code = Self.blocks()[i]
        let expected = code.split(separator: "\n").compactMap { line -> String? in
            guard let r = line.range(of: "--> ") else { return nil }
            return Self.squeeze(line[r.upperBound...])
        }
        let r = runScript(code, files: ["stage.lua": "local q, factor = ...\nq:put(factor * 7)\n"], timeout: 60)
        #expect(r.status == 0 && !r.timedOut, "block \(i):\n\(code)\n\(r)")
        #expect(r.lines.map { Self.squeeze($0[...]) } == expected, "block \(i):\n\(code)\n\(r)")
    }

    /// Every Markdown link target of the repository's documents (README.md,
    /// docs/*.md, examples/README.md) stays inside the repository: a relative
    /// path that resolves under the package root and exists, or a web URL
    /// (none to a local file outside, such as the design notes in ../shared).
    @Test func documentsLinkOnlyInsideTheRepository() throws {
        let root = packageRoot.standardizedFileURL.path
        let docs = packageRoot.appendingPathComponent("docs")
        var files = [packageRoot.appendingPathComponent("README.md")]
        files += try FileManager.default.contentsOfDirectory(at: docs, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "md" }
        let examples = packageRoot.appendingPathComponent("examples/README.md")
        if FileManager.default.fileExists(atPath: examples.path) { files.append(examples) }
        let link = try Regex(#"\]\(([^)\s]+)\)"#)
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            let outside = text.contains("../shared") || text.contains("/work/")
            #expect(!outside, "\(file.lastPathComponent) names a path outside the repository")
            for match in text.matches(of: link) {
                let target = String(match.output[1].substring ?? "")
                if target.hasPrefix("https://") || target.hasPrefix("http://") || target.hasPrefix("#") { continue }
                let path = String(target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0])
                let resolved = file.deletingLastPathComponent().appendingPathComponent(path).standardizedFileURL.path
                #expect(resolved.hasPrefix(root + "/") && FileManager.default.fileExists(atPath: resolved),
                        "\(file.lastPathComponent) links to \(target), which is not a file of the repository")
            }
        }
    }

    @Test func theReadmeLinksToTheReference() throws {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let linksToIt = readme.contains("](docs/api.md)"), namesTheNotes = readme.contains("lua-api.md")
        #expect(linksToIt, "the README has no link to docs/api.md")
        #expect(!namesTheNotes, "the README names the design notes' lua-api.md instead of docs/api.md")
    }
}
