import CJobrunShims
import CLua
import Glibc

/// What one process of a run knows about itself. Each process (main, forked
/// or `script` worker) has exactly one Lua state and one runtime.
enum Runtime {
    static var isMain = true
    static var processName = "MainProcess"
    static var isDaemon = false
    /// The process created its Lua state (main, `script` worker) and closes
    /// it at exit; a forked worker runs in a copy of its parent's and does not.
    static var ownsState = true
    /// Folder of the main script: relative `script` paths resolve against it.
    static var scriptDirectory = "."
    /// Reused for every item this process encodes and decodes.
    static var encoder = ValueEncoder()
    static var scratch = ScratchBuffer()
}
