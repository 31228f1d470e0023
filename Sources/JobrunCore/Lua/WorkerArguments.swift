/// The hidden worker options, as core.spawn writes them: `--worker-*` pairs
/// and flags, then the script. `--worker-token` is the run's random token:
/// the worker attaches only to the arena (descriptor 3) that carries it, and
/// `--worker-args OFFSET:LENGTH` must be an allocated block of that arena.
///
/// Parsed without the argument parser by the command line (its fast path)
/// and by a re-entered host executable (Reentry, role "script": a
/// `Process{script = ...}` started inside a Swift host's worker).
package struct WorkerArguments {
    package var arenaFD: Int32 = 3, token = "", args = "0:0", name = "Process", parent: Int32 = 0, directory = ".", record = -1
    var daemon = false, prefix = false
    var packagePath = "", packageCPath = ""
    var script = ""

    package init?(_ argv: [String]) {
        var i = 0
        while i < argv.count - 1 {
            let key = argv[i]
            switch key {
            case "--worker-daemon": daemon = true; i += 1; continue
            case "--worker-prefix": prefix = true; i += 1; continue
            default: break
            }
            let value = argv[i + 1]
            switch key {
            case "--worker-arena-fd": guard let v = Int32(value) else { return nil }; arenaFD = v
            case "--worker-token": token = value
            case "--worker-args": args = value
            case "--worker-name": name = value
            case "--worker-parent": guard let v = Int32(value) else { return nil }; parent = v
            case "--worker-dir": directory = value
            case "--worker-path": packagePath = value
            case "--worker-cpath": packageCPath = value
            case "--worker-record": guard let v = Int(value) else { return nil }; record = v
            default: return nil
            }
            i += 2
        }
        guard i == argv.count - 1 else { return nil }
        script = argv[i]
    }

    package func run() -> Int32 {
        let parts = args.split(separator: ":")
        return Host.runWorker(arenaFD: arenaFD, token: token, argsOffset: UInt64(parts.first ?? "0") ?? 0,
                              argsLength: Int(parts.last ?? "0") ?? 0, name: name, daemon: daemon,
                              parent: parent, scriptDirectory: directory, script: script, prefix: prefix,
                              packagePath: packagePath, packageCPath: packageCPath,
                              record: record)
    }
}
