import CJobrunShims
import CLua
import Glibc

/// Everything one process of a run knows about itself, in one object: who it
/// is, where the arena is mapped, its children, what it supervises, its codec
/// buffers, its output settings and its per-object caches. Before it, each of
/// these was a `static var` of the type that used it, and each fork reset
/// them in its own place; now a fork resets them in one: `afterFork`.
///
/// One per process. It is made on first use (`current`), filled by
/// `Host.runMain` / `Host.runWorker` / `Arena.create` / `Arena.attach`, and
/// kept in the Lua state's extra space (LUA_EXTRASPACE, Lua's slot for
/// exactly this, copied into every coroutine), where the bound functions
/// find it with one load: `ProcessContext.of(L)`. A forked worker runs in a
/// copy of its parent's memory, so it has a copy of the context at the same
/// address; `afterFork` makes the copy its own.
///
/// Code without a Lua state (the allocator, the ledger, the monitor, the
/// atexit handler) reaches it through `current`, the one narrow escape
/// hatch. That is safe because the process is single-threaded while any of
/// it changes: workers never start threads, and the monitor's repair
/// threads (Monitor.State.repair) only read parts that are fixed once the
/// monitor has started (the arena mapping, the copy of the main process's
/// identity it was forked with); the monitor runs no Lua and starts no worker.
final class ProcessContext: @unchecked Sendable {
    /// This process's context. Made once, never replaced.
    static let current: ProcessContext = {
        let c = ProcessContext()
        jr_set_process_hot(c.hot)
        return c
    }()

    /// `current.hot` without the swift_once a `static let` costs on every
    /// read (Linux): the arena, the ledger and the kill points read it per item.
    @inline(__always)
    static var processHot: UnsafeMutablePointer<Hot> {
        if let p = jr_process_hot() { return p.assumingMemoryBound(to: Hot.self) }
        return firstHot()
    }

    /// Before anything made the context (out of line: the per-item path
    /// never comes here).
    @inline(never)
    private static func firstHot() -> UnsafeMutablePointer<Hot> { current.hot }

    /// The process uses `current`; tests make their own to check `afterFork`.
    init() {
        setKillAt(TestHooks.KillAt.fromEnvironment())
    }

    /// The context of the process running `L` (set by `install`).
    @inline(__always)
    static func of(_ L: LuaState?) -> ProcessContext {
        Unmanaged<ProcessContext>.fromOpaque(jr_lua_context(L)!).takeUnretainedValue()
    }

    /// What every put and get touches, from the state running it: no
    /// reference count is taken (the context lives as long as the process).
    @inline(__always)
    static func hot(_ L: LuaState?) -> UnsafeMutablePointer<Hot> {
        Unmanaged<ProcessContext>.fromOpaque(jr_lua_context(L)!)._withUnsafeGuaranteedRef { $0.hot }
    }

    /// Keeps the context in a new state's extra space, before any coroutine
    /// is made (each copies the main thread's extra space).
    func install(in L: LuaState) {
        jr_lua_set_context(L, Unmanaged.passUnretained(self).toOpaque())
    }

    // MARK: identity

    struct Identity {
        var isMain = true
        var processName = "MainProcess"
        var isDaemon = false
        /// The process created its Lua state (main, `script` worker) and closes
        /// it at exit; a forked worker runs in a copy of its parent's and does not.
        var ownsState = true
        /// Folder of the main script: relative `script` paths resolve against it.
        var scriptDirectory = "."
        /// The main script's file name, for workers' process titles ("jobrun:
        /// consumer-1 (pipeline.lua)").
        var scriptName = "jobrun"
        /// Its `start` (ProcessIdentity; 0: no record).
        var start: UInt64 = 0
    }
    var identity = Identity()

    // MARK: arena mapping

    /// Where the run's arena is mapped: written by Arena.create or
    /// Arena.attach, before any Lua runs or any thread starts, and never
    /// again (a fork keeps the mapping at the same address).
    struct ArenaMapping {
        var fd: Int32 = -1
        var base: UnsafeMutableRawPointer?
        /// Address space reserved (not memory): smaller when ulimit -v refuses 256 GiB.
        var reservedBytes: UInt64 = 256 << 30
    }
    /// Kept in the per-item part: every object access reads `base`.
    var arena: ArenaMapping {
        get { hot.pointee.arena }
        set { hot.pointee.arena = newValue }
    }

    /// This process's ledger record (nil before it registers), in the
    /// per-item part: puts and gets count into it and note their intents.
    var record: UnsafeMutablePointer<jr_process_record>? { hot.pointee.record }

    /// Makes `r`, slot number `slot` (index + 1) of the process table, this
    /// process's record; nil: it has none.
    func own(_ r: UnsafeMutablePointer<jr_process_record>?, slot: UInt32) {
        hot.pointee.record = r
        hot.pointee.recordSlot = r == nil ? 0 : slot
    }

    // MARK: children

    struct Children {
        /// Children this process started and has not reaped.
        var live: Set<pid_t> = []
        var pidfds: [pid_t: Int32] = [:]
        /// Exit statuses collected by `reapStrays` for children not yet asked about.
        var reaped: [pid_t: Int32] = [:]
        /// Set in the main process only: the setting is not inherited by fork.
        var isSubreaper = false
    }
    var children = Children()

    // MARK: supervision

    struct Supervision {
        /// The monitor's pid and the write end of the pipe that tells it the
        /// run is over (main process only; 0 / -1 when unsupervised).
        var monitorPid: pid_t = 0
        var monitorDoneFD: Int32 = -1
        /// The read end of the monitor's answer to an interrupt (interrupt.c).
        var monitorAnswerFD: Int32 = -1
        /// When the main process last looked whether the monitor still runs.
        var lastMonitorCheck: Int64 = 0
        /// Monitors that died during the run.
        var monitorDeaths = 0
        /// Whether descriptors 1 and 2 are terminals, asked once per process.
        var terminal: (out: Bool, err: Bool)?
        /// This process's slot index for each progress counter name it reported.
        var counterSlots: [String: Int] = [:]
    }
    var supervision = Supervision()

    // MARK: output

    struct Output {
        /// `--prefix` (main) or `--worker-prefix` (a `script` worker): read by
        /// `core.spawn` so the setting reaches `script` workers at any depth.
        var prefix = false
        /// The main process's options, for the end of the run (which
        /// `os.exit` reaches through core.exit).
        var mainOptions = Host.Options()
        /// The --stats-json file, opened before the run (main process only):
        /// a temporary file beside it, renamed over it once complete.
        var statsFD: Int32?
        var statsTemp: (path: String, target: String)?
        var ended = false
    }
    var output = Output()

    // MARK: objects

    struct Objects {
        /// Per queue (by offset), how many of its failed tasks, and of the
        /// processes that held them, this process has been told of.
        var failedTold: [UInt64: UInt64] = [:]
        var failedPidsTold: [UInt64: UInt32] = [:]
        /// This process's list of held Pipe ends (PipeHolders; 0 before the
        /// first hold), and a list filled before fork for the child to adopt.
        var pipeList: UInt64 = 0
        var pipeListForChild: UInt64 = 0
        /// The Pipe ends met by the encoder while collecting (the arguments
        /// of a `script` worker).
        var collectedPipeEnds: [(UInt64, Int)]?
        /// This process's handles per object-table slot (userdata not yet
        /// released); copied by fork with the Lua state that holds them.
        var holdings: [UInt32: Int] = [:]
        /// Where each held slot is in this process's list in the arena
        /// (jr_obj_holdings), the free entries, whether the list was begun.
        var holdingsListed: [UInt32: Int] = [:]
        var holdingsListFree: [Int] = []
        var holdingsListStarted = false
        /// Set as the main process closes its state at the end of the run.
        var keepObjectsAtExit = false
    }
    var objects = Objects()

    /// Objects whose last reference this process dropped, to be freed, and
    /// whether a thread is freeing them: only under `dyingLock`, since the
    /// monitor drops references on its repair threads (a stored property
    /// of its own, apart from `objects`, which those threads never touch).
    struct Dying {
        var slots: [UInt32] = []
        var draining = false
        /// Objects to look for a cycle through (slot, generation), and
        /// whether a thread is looking (ObjectTable+Cycles.swift).
        var cycleCandidates: [(UInt32, UInt32)] = []
        var collectingCycles = false
    }
    var dying = Dying()
    let dyingLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    // MARK: the per-item part

    /// What every put and get touches: the codec buffers, the metatables,
    /// the taker-entry cache, the arena mapping, the record. Behind a pointer allocated with the context
    /// (`current` lives as long as the process), so the per-item path pays neither
    /// an exclusivity check (a class's `var` needs a dynamic one) nor a
    /// reference count (a class reference taken from the Lua state needs a
    /// retain and a release).
    struct Hot: ~Copyable {
        /// Reused for every item this process encodes and decodes.
        var encoder = ValueEncoder()
        /// A Dict key, encoded while `encoder` may hold the value.
        var keyEncoder = ValueEncoder(capacity: 256)
        var scratch = ScratchBuffer()
        /// The bound types' metatables, to tell a handle's type by pointer.
        var queueMeta: UnsafeRawPointer?
        var joinableMeta: UnsafeRawPointer?
        var poolMeta: UnsafeRawPointer?
        /// This process's last taker entry, per queue: entries of a live
        /// process never move or go.
        var cachedQueue: UInt64 = 0
        var cachedEntry = 0
        /// A kill point is armed (TestHooks): the one load a kill point costs.
        var killArmed = false
        var arena = ArenaMapping()
        var record: UnsafeMutablePointer<jr_process_record>?
        /// `record`'s slot number (index + 1; 0 without one): the taker
        /// entries of joinable queues are found by it.
        var recordSlot: UInt32 = 0
    }
    let hot: UnsafeMutablePointer<Hot> = {
        let p = UnsafeMutablePointer<Hot>.allocate(capacity: 1)
        p.initialize(to: Hot())
        return p
    }()

    /// Only a test's context ends; `current` lives as long as the process.
    deinit {
        hot.pointee.scratch.base.deallocate()
        hot.deinitialize(count: 1)
        hot.deallocate()
    }


    // MARK: test hooks

    /// JOBRUN_TEST_KILL_AT (TestHooks), read when the context is made; a
    /// unit test's forked child reads it again (TestHooks.load).
    private(set) var killAt: TestHooks.KillAt?

    func setKillAt(_ k: TestHooks.KillAt?) {
        killAt = k
        hot.pointee.killArmed = k != nil
    }

    // MARK: fork

    /// The child of a fork makes its copy of the parent's context its own:
    /// the one place that says what a forked worker keeps and what it drops.
    /// Called right after fork(2) returns 0, before anything else runs.
    ///
    /// Kept: the arena mapping, the codec buffers, the metatables and the
    /// object holdings (the Lua state is a copy too), the output settings, `failedTold` (the script
    /// was told in the parent: a copy of its Lua state knows it too), and
    /// the Pipe list prepared for the child (adopted by PipeHolders.adopt).
    func afterFork() {
        // The parent's children are not ours to wait for.
        for (_, fd) in children.pidfds { close(fd) }
        children = Children()
        // The monitor's pipe and pid are the main process's.
        if supervision.monitorDoneFD >= 0 { close(supervision.monitorDoneFD) }
        supervision.monitorDoneFD = -1
        if supervision.monitorAnswerFD >= 0 { close(supervision.monitorAnswerFD) }
        supervision.monitorAnswerFD = -1
        // Ctrl-C and SIGTERM are the main process's to catch: a worker's
        // terminate() must end it.
        jr_interrupt_forget()
        supervision.monitorPid = 0
        supervision.terminal = nil       // asked again, by this process
        // The --stats-json file is the main process's to write.
        if let fd = output.statsFD { close(fd) }
        output.statsFD = nil
        output.statsTemp = nil
        // Not ours until the child takes over its record (ProcessRegistry.takeOver).
        own(nil, slot: 0)
        identity.start = 0
        identity.isMain = false
        identity.ownsState = false
        hot.pointee.cachedQueue = 0
        hot.pointee.cachedEntry = 0
        // The child lists what it inherited in a list of its own, once it
        // has its record (ObjectTable.listHoldings).
        objects.holdingsListed = [:]
        objects.holdingsListFree = []
        objects.holdingsListStarted = false
    }

    /// A Swift host's Runtime has shut down and unmapped its arena: the
    /// process forgets that run (its mapping, record, caches, holdings,
    /// supervision) so that a new Runtime starts from nothing. The codec
    /// buffers and the metatable pointers are kept (no Lua state of the
    /// run is left; a new one sets the metatables again).
    func forgetRun() {
        arena = ArenaMapping()
        own(nil, slot: 0)
        hot.pointee.cachedQueue = 0
        hot.pointee.cachedEntry = 0
        identity = Identity()
        children = Children()
        supervision = Supervision()
        objects = Objects()
        pthread_mutex_lock(dyingLock)
        dying = Dying()
        pthread_mutex_unlock(dyingLock)
    }

    /// The forked child's name, once it runs as a worker.
    func becomeWorker(name: String, daemon: Bool) {
        identity.isMain = false
        identity.processName = name
        identity.isDaemon = daemon
    }
}
