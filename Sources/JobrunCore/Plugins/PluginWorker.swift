import Glibc

/// What runs inside a plug-in worker process: one Lua state with the whole
/// `jobrun` module, the plug-ins of one folder loaded into it once and kept
/// warm, and `handle`, which turns a request message into a response message
/// (PluginMessage). It starts no process and owns no queue: the worker's
/// role loop gets a request, calls `handle`, puts the response.
///
/// A plug-in is `<directory>/<name>.lua` returning a table of functions
/// (text only, no bytecode). `require` finds its siblings in the folder
/// (never in the current directory). A plug-in is loaded on its first call
/// and reused; when a file it loaded (its own or a sibling's: inode, size,
/// mtime and ctime) has changed, every plug-in is dropped and the next
/// call loads afresh. Every failure is an error response with a code
/// (PluginErrorCode) and the worker goes on serving.
///
/// Not thread-safe: one worker, one thread (a process has one).
package final class PluginWorker {
    package struct Options: Sendable {
        /// Bytes of Lua memory the state may hold (nil: no limit). A call
        /// that needs more fails with `limitExceeded`; the state is
        /// collected and serves the next call. Counts the whole state,
        /// the `jobrun` module and the warm plug-ins included (~300 KiB
        /// before any plug-in).
        package var memoryLimit: Int?
        /// Only safe libraries (PluginState's list; docs/embedding.md).
        package var restricted: Bool
        /// In restricted mode, the folders `io.open`, `io.lines`,
        /// `os.remove`, `os.rename`, `loadfile` and `dofile` may reach
        /// (compared by real path). Empty: no file access at all.
        package var allowedFolders: [String]
        /// How often the files of a called plug-in are checked for changes:
        /// 0 (default) checks on every call (one `stat` per file it loaded);
        /// more skips the check until that many seconds have passed.
        package var reloadCheckInterval: Double
        /// Where a plug-in's `print`, `io.write` and `io.stdout` go, each
        /// line tagged `[plugin:function] `: descriptor 2 by default.
        package var outputFD: Int32
        /// Lua memory limits of some plug-ins, in place of `memoryLimit`
        /// while a call to them runs (the budget is the whole state's).
        package var pluginMemory: [String: Int]

        package init(memoryLimit: Int? = nil, restricted: Bool = false, allowedFolders: [String] = [],
                     reloadCheckInterval: Double = 0, outputFD: Int32 = 2, pluginMemory: [String: Int] = [:]) {
            self.memoryLimit = memoryLimit; self.restricted = restricted; self.allowedFolders = allowedFolders
            self.reloadCheckInterval = reloadCheckInterval; self.outputFD = outputFD; self.pluginMemory = pluginMemory
        }
    }

    package let directory: String
    package let options: Options
    let state: PluginState
    private var lastCheck: Int64 = .min
    private let checkEvery: Int64

    /// A worker serving the plug-ins of `directory`. Throws when the folder
    /// cannot be used (missing, not a folder) or the state cannot be made.
    package init(directory: String, options: Options = Options()) throws(JobrunError) {
        guard let real = PluginWorker.realPath(directory) else {
            throw JobrunError(.valueError, "plug-in folder \(directory): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw JobrunError(.valueError, "plug-in folder \(directory) is not a folder")
        }
        self.directory = real
        self.options = options
        checkEvery = Int64(max(0, options.reloadCheckInterval) * 1e9)
        let allowed = options.allowedFolders.compactMap(PluginWorker.realPath)
        state = try PluginState(directory: real, options: options, allowed: allowed)
    }

    /// Serves one request (PluginMessage): loads or reloads the plug-in,
    /// calls the function, returns the response bytes. Never throws: every
    /// failure is an error response.
    package func handle(_ request: [UInt8]) -> [UInt8] {
        state.handle(request, check: checkNow())
    }

    /// Whether this call looks at the plug-in's files (reloadCheckInterval).
    func checkNow() -> Bool {
        guard checkEvery > 0 else { return true }
        let now = monotonicNanos()
        guard lastCheck == .min || now - lastCheck >= checkEvery else { return false }
        lastCheck = now
        return true
    }

    /// Before the worker process ends: stops the child processes its
    /// plug-ins started (Process, Pool) and did not join. Then drop the
    /// worker (its state closes, finalizers release the plug-ins' handles).
    package func stopChildren() { state.stopChildren() }

    /// Changes the memory limit (nil: none) from the next allocation on.
    package func setMemoryLimit(_ bytes: Int?) { state.setMemoryLimit(bytes) }

    /// Bytes the Lua state holds now.
    package var memoryInUse: Int { state.memoryInUse }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}
