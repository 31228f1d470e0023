import Foundation
import Testing
import Jobrun

/// The Swift snippets of docs/embedding.md, run. `snippetsAreHere` checks
/// that every snippet of the guide appears in this file line for line, so
/// the guide cannot drift from code that compiles and does what it says.
@Suite struct EmbeddingDocTests {
    @Test func literalsAndLookups() {
        let args: LuaValue = ["path": "a.png", "width": 128, "scale": 0.5, "tags": ["x", "y"]]
        let width = args["width"].intValue          // 128
        let firstTag = args["tags"][1]              // "x": Lua counts from 1
        let missing = args["size"]["height"]        // .nil, not a crash
        #expect(width == 128 && firstTag == "x" && missing == .nil)
    }

    @Test func tables() {
        var t: LuaTable = [1, 2]
        t[4] = 4                   // past the end: hash part
        t[3] = 3                   // fills the gap: array part is now [1, 2, 3, 4]
        t["name"] = "x"
        for (key, value) in t { print(key, value) }   // 1 1, 2 2, 3 3, 4 4, "name" "x"
        print(LuaValue.table(t))                       // {1, 2, 3, 4, name = "x"}
        #expect(t.array == [1, 2, 3, 4] && t.hash == ["name": "x"])
        #expect(t.map { "\($0.key) \($0.value)" } == ["1 1", "2 2", "3 3", "4 4", "\"name\" \"x\""])
        #expect(LuaValue.table(t).description == #"{1, 2, 3, 4, name = "x"}"#)
    }

    @Test func codable() throws {
        struct Resize: Codable { var path: String; var width: Int; var keepRatio = true; var label: String? = nil }
        let value = try LuaValueEncoder().encode(Resize(path: "a.png", width: 128))
        // {keepRatio = true, path = "a.png", width = 128}: a nil optional is no entry
        let back = try LuaValueDecoder().decode(Resize.self, from: value)
        #expect(value.description == #"{keepRatio = true, path = "a.png", width = 128}"#)
        #expect(back.path == "a.png" && back.width == 128 && back.label == nil)
    }

    @Test func snippetsAreHere() throws {
        let here = URL(fileURLWithPath: #filePath)
        let guide = here.deletingLastPathComponent().appendingPathComponent("../../docs/embedding.md")
        let doc = try String(contentsOf: guide, encoding: .utf8)
        // The PluginHost snippets run in PluginHostTests (a test process of their own).
        let host = here.deletingLastPathComponent().appendingPathComponent("PluginHostTests.swift")
        let source = try String(contentsOf: here, encoding: .utf8) + "\n" + String(contentsOf: host, encoding: .utf8)
        func lines(_ s: some StringProtocol) -> [String] {
            s.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let code = lines(source)
        let blocks = doc.components(separatedBy: "```swift\n").dropFirst().map { $0.components(separatedBy: "```")[0] }
        #expect(blocks.count >= 4)
        for block in blocks where !block.hasPrefix("// Package.swift") {
            let want = lines(block).filter { !$0.isEmpty }
            let found = code.indices.contains { i in i + want.count <= code.count && Array(code[i..<(i + want.count)]) == want }
            #expect(found, "docs/embedding.md snippet not in EmbeddingDocTests.swift or PluginHostTests.swift:\n\(block)")
        }
    }
}

/// docs/embedding.md's "Queues from Swift" snippets, run in SwiftQueueTests'
/// own process (they start a runtime); `snippetsAreHere` checks they are here.
extension SwiftQueueTests {
    /// The guide's Lua block that starts with `-- <name>`.
    static func guideLua(_ name: String) throws -> String {
        let guide = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/embedding.md")
        let doc = try String(contentsOf: guide, encoding: .utf8)
        let block = doc.components(separatedBy: "```lua\n").dropFirst().map { $0.components(separatedBy: "```")[0] }
            .first { $0.hasPrefix("-- \(name)\n") }
        return try #require(block, "docs/embedding.md has a Lua block -- \(name)")
    }

    @Test func theGuidesQueuesFromSwift() async throws {
        try await Self.bounded(60) {
            // The snippet names square.lua in the working directory.
            let dir = try Self.script("square.lua", try Self.guideLua("square.lua"))
            let old = FileManager.default.currentDirectoryPath
            #expect(FileManager.default.changeCurrentDirectoryPath((dir as NSString).deletingLastPathComponent))
            defer { _ = FileManager.default.changeCurrentDirectoryPath(old) }

            let numbers = try JoinableQueue(name: "numbers")
            let squares = try JoinableQueue(name: "squares")
            let workers = try (1...2).map { i in
                try ScriptWorker.start(script: "square.lua", arguments: [.queue(numbers), .queue(squares)], name: "square-\(i)")
            }
            for n in 1...100 { try await numbers.put(.integer(Int64(n))) }
            for _ in workers { try await numbers.put("stop") }
            var sum: Int64 = 0
            for _ in 1...100 { sum += try await squares.get().int64Value ?? 0 }
            try await numbers.join()            // every number marked done
            for w in workers { _ = await w.wait() }   // 0: each ended on its "stop"
            #expect(sum == 338_350)
            for w in workers { #expect(w.exitCode == 0) }

            let careless = try Self.script("careless.lua", "local jobs = ...\njobs:get()\nos.exit(3)\n")
            let jobs = try JoinableQueue()
            try await jobs.put("job")
            let w = try ScriptWorker.start(script: careless, arguments: [.queue(jobs)], name: "careless")
            _ = await w.wait()
            #expect(w.exitCode == 3)
            do {
                try await jobs.join()
            } catch let error as JobrunError where error.code == .workerDied {
                print(error.message)   // 1 item will never be marked done: careless (pid 4242) exited with status 3 while holding it
            }
            // Told once (joinAfterAWorkerDiedWithoutTaskDoneThrowsNamingIt checks the message).
            try await jobs.join()
        }
    }
}
