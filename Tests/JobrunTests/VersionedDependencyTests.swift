import Foundation
import Glibc
import Testing

/// Issue 14, item 1's proof: another package depends on this one *by
/// version* and builds and runs with `import Jobrun`. SwiftPM refuses
/// `unsafeFlags` in a versioned dependency (not in a path dependency), so
/// only a versioned one proves the library product is usable.
///
/// The test copies the repository's files (tracked and untracked, not
/// ignored) into a temporary git repository, tags it 0.14.0 (README's
/// version), and builds examples/swift-pipeline with its dependency
/// rewritten to `.package(url: "file://<copy>", from: "0.14.0")`, then runs
/// it. It rebuilds the package's library (measured: 40 s of build, 50 s in
/// all, on 2 loaded cores); JOBRUN_VERSIONED_DEPENDENCY_TEST=0 skips it, and
/// so does a source tree that is not a git checkout. The dependencies of the
/// package come from SwiftPM's cache, which building the package filled.
@Suite struct VersionedDependencyTests {
    static let version = "0.14.0"
    static var enabled: Bool {
        ProcessInfo.processInfo.environment["JOBRUN_VERSIONED_DEPENDENCY_TEST"] != "0"
            && FileManager.default.fileExists(atPath: root.appendingPathComponent(".git").path)
    }

    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs `arguments` in `directory` with output to a file; fails after `timeout` seconds.
    @discardableResult
    static func run(_ arguments: [String], in directory: URL, timeout: Double) async throws -> String {
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        p.currentDirectoryURL = directory
        let log = directory.appendingPathComponent(".run-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let out = try FileHandle(forWritingTo: log)
        p.standardOutput = out
        p.standardError = out
        var env = ProcessInfo.processInfo.environment
        // Not the test's own re-entry or test-process variables.
        for key in env.keys where key.hasPrefix("JOBRUN_") { env[key] = nil }
        p.environment = env
        try p.run()
        try out.close()
        let end = Date().addingTimeInterval(timeout)
        // Task.sleep, not usleep: a blocked cooperative thread stalls the other suites.
        while p.isRunning && Date() < end { try? await Task.sleep(for: .milliseconds(50)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        guard p.terminationReason == .exit && p.terminationStatus == 0 else {
            throw Failure(command: arguments.joined(separator: " "), output: text)
        }
        return text
    }

    struct Failure: Error, CustomStringConvertible {
        let command: String, output: String
        var description: String { "\(command) failed:\n\(output.suffix(4000))" }
    }

    @Test(.enabled(if: enabled)) func aPackageDependingOnATaggedVersionBuildsAndRuns() async throws {
        let fm = FileManager.default
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("jobrun-versioned-\(getpid())")
        try? fm.removeItem(at: work)
        defer { try? fm.removeItem(at: work) }
        // The copy is named jobrun: a URL's last component is the package's identity.
        let copy = work.appendingPathComponent("jobrun")
        try fm.createDirectory(at: copy, withIntermediateDirectories: true)
        let listing = try await Self.run(["git", "ls-files", "-co", "--exclude-standard"], in: Self.root, timeout: 60)
        for line in listing.split(separator: "\n") where !line.hasPrefix(".run-") {
            let path = String(line)
            let from = Self.root.appendingPathComponent(path), to = copy.appendingPathComponent(path)
            guard fm.fileExists(atPath: from.path) else { continue }   // deleted, not yet committed
            try fm.createDirectory(at: to.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.copyItem(at: from, to: to)
        }
        let git = ["git", "-c", "user.name=jobrun-test", "-c", "user.email=test@jobrun.invalid", "-c", "commit.gpgsign=false"]
        try await Self.run(git + ["init", "-q"], in: copy, timeout: 60)
        try await Self.run(git + ["add", "-A"], in: copy, timeout: 60)
        try await Self.run(git + ["commit", "-q", "-m", "jobrun \(Self.version)"], in: copy, timeout: 60)
        try await Self.run(git + ["tag", Self.version], in: copy, timeout: 60)

        // The consumer: examples/swift-pipeline, depending on the tag.
        let example = Self.root.appendingPathComponent("examples/swift-pipeline")
        let consumer = work.appendingPathComponent("consumer")
        try fm.createDirectory(at: consumer.appendingPathComponent("Sources/swift-pipeline"), withIntermediateDirectories: true)
        for file in ["square.lua", "Sources/swift-pipeline/main.swift"] {
            try fm.copyItem(at: example.appendingPathComponent(file), to: consumer.appendingPathComponent(file))
        }
        let manifest = try String(contentsOf: example.appendingPathComponent("Package.swift"), encoding: .utf8)
        let dependency = #".package(url: "file://\#(copy.path)", from: "\#(Self.version)")"#
        #expect(manifest.contains(#".package(name: "jobrun", path: "../..")"#))
        try manifest.replacingOccurrences(of: #".package(name: "jobrun", path: "../..")"#, with: dependency)
            .write(to: consumer.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)

        let t0 = Date()
        try await Self.run(["swift", "build", "--product", "swift-pipeline"], in: consumer, timeout: 1500)
        let built = Date().timeIntervalSince(t0)
        let resolved = try String(contentsOf: consumer.appendingPathComponent("Package.resolved"), encoding: .utf8)
        #expect(resolved.contains("\"version\" : \"\(Self.version)\""), "resolved by version:\n\(resolved)")
        let output = try await Self.run([".build/debug/swift-pipeline", "1000", "square.lua"], in: consumer, timeout: 120)
        print("VersionedDependencyTests: built in \(Int(built)) s; output: \(output)")
        #expect(output.contains("sum of the squares of 1...1000: 333833500"), "\(output)")
        // Both workers start, but under load one may take every item.
        #expect(output.contains("items: 1000"), "\(output)")
    }
}
