import ArgumentParser
import Foundation
import Jobrun

// plugin-host [--workers N] [--timeout SECONDS] [--plugins DIR] PLUGIN...
//
// Passes each line of standard input through a chain of Lua plug-ins and
// prints what comes out, in input order. Each plug-in is
// `<plugins>/<name>.lua` returning a table with a function `line`:
//
//     return { line = function(text) return text:upper() end }
//
// `line` gets one line (a string) and returns a string (the new line), nil
// (drop the line) or a list of strings (split it: each piece goes on
// through the rest of the chain). The plug-ins run in jobrun worker
// processes: a plug-in that raises, loops or allocates without bound fails
// that line only. The tool says so on standard error, naming the plug-in
// and the line, goes on with the next line, and exits with status 1.
@main
struct PluginHostTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin-host",
        abstract: "Pass standard input's lines through a chain of Lua plug-ins.")

    @Option(help: "Worker processes running the plug-ins.")
    var workers = 2

    @Option(help: "Seconds one plug-in call may take; past it the worker is replaced.")
    var timeout = 2.0

    @Option(help: "The folder of plug-ins (<name>.lua).")
    var plugins = "plugins"

    @Argument(help: "The plug-ins to apply to each line, in order.")
    var chain: [String]

    /// Lines being worked on at once (results still print in input order).
    static let window = 32

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        guard !chain.isEmpty else { throw ValidationError("name at least one plug-in") }
    }

    func run() async throws {
        let host = try PluginHost(
            directory: plugins, workers: workers,
            limits: .init(memory: .mebibytes(64), callTimeout: .milliseconds(Int(timeout * 1000))))
        let chain = self.chain
        var failed = 0

        await withTaskGroup(of: (Int, Result<[String], LineError>).self) { group in
            var number = 0                       // lines read
            var pending: [Int: Result<[String], LineError>] = [:]
            var next = 1                         // the next line to print
            var inFlight = 0

            func emit(_ n: Int, _ result: Result<[String], LineError>) {
                pending[n] = result
                while let r = pending.removeValue(forKey: next) {
                    switch r {
                    case .success(let lines): for l in lines { print(l) }
                    case .failure(let e):
                        failed += 1
                        printError("plugin-host: line \(next): \(e)")
                    }
                    next += 1
                }
            }

            while let line = readLine() {
                number += 1
                let n = number
                group.addTask { (n, await Self.process(line, through: chain, host: host)) }
                inFlight += 1
                if inFlight >= Self.window, let (n, r) = await group.next() {
                    inFlight -= 1
                    emit(n, r)
                }
            }
            for await (n, r) in group { emit(n, r) }
        }
        await host.shutdown()
        if failed > 0 {
            printError("plugin-host: \(failed) line\(failed == 1 ? "" : "s") failed")
            throw ExitCode(1)
        }
    }

    /// Why one line produced no output.
    struct LineError: Error, CustomStringConvertible {
        var plugin: String
        var message: String
        var description: String { "plug-in \(plugin): \(message)" }
    }

    /// One line through the whole chain.
    static func process(_ line: String, through chain: [String], host: PluginHost) async -> Result<[String], LineError> {
        var lines = [line]
        for plugin in chain {
            var out: [String] = []
            for text in lines {
                let result: LuaValue
                do {
                    result = try await host.call(plugin, "line", .string(text))
                } catch {
                    return .failure(LineError(plugin: plugin, message: "\(error.code): \(error.message)"))
                }
                switch result {
                case .nil: break
                case .string: out.append(result.stringValue ?? "")
                default:
                    guard let items = result.arrayValue, items.allSatisfy({ $0.stringValue != nil }) else {
                        return .failure(LineError(plugin: plugin, message: "returned \(result), not a string, nil or a list of strings"))
                    }
                    out += items.map { $0.stringValue! }
                }
            }
            lines = out
        }
        return .success(lines)
    }
}

func printError(_ text: String) {
    var stderr = StandardError()
    print(text, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandle.standardError.write(Data(string.utf8))
    }
}
