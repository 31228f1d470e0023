import CJobrunShims
import Glibc

/// The run's shared memory: one memfd, mapped MAP_SHARED by every process of
/// the run (inherited across fork, passed by descriptor to `script` workers),
/// holding every queue, lock and in-flight item. It is sized once, generously:
/// tmpfs charges only the pages that are touched, and freed large blocks give
/// their pages back with a punched hole. Everything in it refers to everything
/// else by offset, because a `script` worker maps it at another address.
///
/// Blocks come in power-of-two size classes with one free list per class,
/// guarded by the header's robust `alloc_lock`.
public enum Arena {
    /// Address space reserved for the arena (not memory: see above).
    /// Address space reserved for the arena (not memory: see above); smaller
    /// when a limit on address space (ulimit -v) refuses the first choice.
    public private(set) static var reservedBytes: UInt64 = 256 << 30
    static let headerBytes: UInt64 = (UInt64(MemoryLayout<jr_arena_header>.size) + 4095) & ~4095
    /// Blocks at least this large are page aligned and give their pages back when freed.
    static let punchClass: UInt64 = 16
    /// Free blocks of each class below `alwaysPunchClass` keep their pages
    /// up to this many bytes per class, so a stream of large items does not
    /// fault in and zero every page of every item. The pages were in use at the
    /// peak anyway; at most 64 MiB per class are kept, and blocks of 16 MiB and
    /// more are always given back.
    static let residentBytesPerClass: UInt64 = 64 << 20
    static let alwaysPunchClass: UInt64 = 24
    /// Set in a free block's size_class when it kept its pages.
    static let residentFlag: UInt64 = 1 << 32

    public private(set) static var fd: Int32 = -1
    public private(set) static var base: UnsafeMutableRawPointer! = nil
    static var header: UnsafeMutablePointer<jr_arena_header> { base.assumingMemoryBound(to: jr_arena_header.self) }

    public static var isAttached: Bool { base != nil }

    /// Creates the arena of a new run (in the main process, before any worker).
    public static func create(limit: UInt64?) throws {
        let created = jr_memfd_create("jobrun-arena")
        if created < 0 { throw SystemError(call: "memfd_create", errno: Glibc.errno) }
        // Close-on-exec (programs started by os.execute must not hold the run's
        // memory), and numbered above the descriptors a worker is handed (3).
        let fd = jr_dup_cloexec(created, 10)
        close(created)
        if fd < 0 { throw SystemError(call: "fcntl(F_DUPFD_CLOEXEC)", errno: Glibc.errno) }
        var size: UInt64 = 256 << 30
        while true {
            do {
                _ = try retryingEINTR("ftruncate") { ftruncate(fd, off_t(size)) }
                try map(fd: fd, size: size)
                break
            } catch let e as SystemError where e.errno == ENOMEM && size > 256 << 20 {
                size /= 4
            }
        }
        let h = header
        h.pointee.magic = JR_ARENA_MAGIC
        h.pointee.size = size
        h.pointee.limit = limit ?? defaultLimit()
        h.pointee.top = headerBytes
        _ = jr_mutex_init(&h.pointee.alloc_lock)
        _ = jr_mutex_init(&h.pointee.proc_lock)
        TestHooks.load()
    }

    /// Maps an arena created by another process of the run (a `script` worker).
    public static func attach(fd: Int32) throws {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError(call: "fstat", errno: Glibc.errno) }
        try map(fd: fd, size: UInt64(st.st_size))
        guard header.pointee.magic == JR_ARENA_MAGIC else {
            throw SystemError(call: "attach arena (bad magic)", errno: EINVAL)
        }
        TestHooks.load()
    }

    private static func map(fd: Int32, size: UInt64) throws {
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0)
        if p == MAP_FAILED || p == nil { throw SystemError(call: "mmap", errno: Glibc.errno) }
        self.fd = fd
        self.base = p
        self.reservedBytes = size
    }

    /// Half of physical memory: past that, producers wait for consumers.
    static func defaultLimit() -> UInt64 {
        let pages = UInt64(max(1, sysconf(Int32(_SC_PHYS_PAGES))))
        let pageSize = UInt64(max(1, sysconf(Int32(_SC_PAGESIZE))))
        return pages * pageSize / 2
    }

    @inline(__always)
    static func pointer(_ offset: UInt64) -> UnsafeMutableRawPointer { base + Int(offset) }

    @inline(__always)
    static func offset(of p: UnsafeRawPointer) -> UInt64 { UInt64(p - UnsafeRawPointer(base)) }

    static func sizeClass(for payload: Int) -> UInt64 {
        let total = UInt64(payload) + UInt64(MemoryLayout<jr_block>.size)
        var c: UInt64 = 5
        while (UInt64(1) << c) < total { c += 1 }
        return c
    }

    enum AllocFailure: Error { case overLimit(need: UInt64, inUse: UInt64, limit: UInt64), exhausted }

    /// The value a block's `next` holds while it is allocated.
    static let allocatedMarker: UInt64 = 0x616c6c6f63656421 // "allocated"

    /// Allocates a block and returns the offset of its payload. With
    /// `recordingIn` (a field of the caller's process record), the offset is
    /// also stored there before the allocator's lock is released, so a
    /// SIGKILL just after the call cannot lose the block: the intent names it.
    static func allocate(_ payload: Int, recordingIn slot: UnsafeMutablePointer<UInt64>? = nil) throws(AllocFailure) -> UInt64 {
        let c = sizeClass(for: payload)
        let size = UInt64(1) << c
        let h = header
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        if h.pointee.in_use + size > h.pointee.limit {
            throw .overLimit(need: size, inUse: h.pointee.in_use, limit: h.pointee.limit)
        }
        // A block that kept its pages first: reusing a punched one while
        // resident ones wait would fault in every page of every item.
        var blockOffset = pop(&h.pointee.free_heads, c)
        if blockOffset != 0 {
            let b = pointer(blockOffset).assumingMemoryBound(to: jr_block.self)
            if b.pointee.size_class & residentFlag != 0 { residentCount(h, c).pointee -= 1 }
        } else {
            blockOffset = pop(&h.pointee.punched_heads, c)
        }
        if blockOffset == 0 {
            let align = min(size, 4096)
            let start = (h.pointee.top + align - 1) & ~(align - 1)
            if start + size > h.pointee.size { throw .exhausted }
            h.pointee.top = start + size
            blockOffset = start
        }
        h.pointee.in_use += size
        if h.pointee.in_use > h.pointee.peak { h.pointee.peak = h.pointee.in_use }
        let b = pointer(blockOffset).assumingMemoryBound(to: jr_block.self)
        b.pointee.size_class = c
        b.pointee.next = allocatedMarker
        let payloadOffset = blockOffset + UInt64(MemoryLayout<jr_block>.size)
        if let slot { jr_store_u64(slot, payloadOffset) }
        return payloadOffset
    }

    /// Allocates a zero-filled block (for shared objects).
    static func allocateZeroed(_ payload: Int) throws(AllocFailure) -> UInt64 {
        let off = try allocate(payload)
        memset(pointer(off), 0, payload)
        return off
    }

    /// A zero-filled shared object whose first field is a `jr_object_header`,
    /// stamped with its type and a run-unique id.
    static func newObject<T>(_: T.Type, type: Int) throws(AllocFailure) -> (UInt64, UnsafeMutablePointer<T>) {
        let off = try allocateZeroed(MemoryLayout<T>.size)
        let header = pointer(off).assumingMemoryBound(to: jr_object_header.self)
        header.pointee.type = UInt32(type)
        header.pointee.id = nextObjectID()
        return (off, pointer(off).assumingMemoryBound(to: T.self))
    }

    /// Whether the block at `payloadOffset` is allocated (not on a free list).
    static func isAllocated(_ payloadOffset: UInt64) -> Bool {
        let b = pointer(payloadOffset - UInt64(MemoryLayout<jr_block>.size)).assumingMemoryBound(to: jr_block.self)
        let h = header
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        return b.pointee.next == allocatedMarker
    }

    /// Returns a block; large ones give their pages back to the system.
    /// `clearing` / `clearingOffset` (a stage or block field of the caller's
    /// record) are zeroed under the allocator's lock as the block goes back,
    /// so an intent that names the block is cleared exactly when it is freed.
    static func free(_ payloadOffset: UInt64, clearing: UnsafeMutablePointer<UInt32>? = nil,
                     clearingOffset: UnsafeMutablePointer<UInt64>? = nil) {
        let blockOffset = payloadOffset - UInt64(MemoryLayout<jr_block>.size)
        let b = pointer(blockOffset).assumingMemoryBound(to: jr_block.self)
        let c = b.pointee.size_class & ~residentFlag
        let size = UInt64(1) << c
        let h = header
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        b.pointee.size_class = c
        var punched = false
        if c >= punchClass {
            if c < alwaysPunchClass && UInt64(residentCount(h, c).pointee + 1) * size <= residentBytesPerClass {
                residentCount(h, c).pointee += 1
                b.pointee.size_class = c | residentFlag
            } else {
                // Give the pages back, except the header page (it holds the
                // free-list link), before the block can be handed out again.
                jr_mutex_unlock(&h.pointee.alloc_lock)
                _ = jr_punch_hole(fd, blockOffset + 4096, size - 4096)
                _ = jr_mutex_lock(&h.pointee.alloc_lock)
                punched = true
            }
        }
        if punched { push(&h.pointee.punched_heads, c, blockOffset) } else { push(&h.pointee.free_heads, c, blockOffset) }
        h.pointee.in_use -= size
        if let clearing { jr_store_u32(clearing, 0) }
        if let clearingOffset { jr_store_u64(clearingOffset, 0) }
        let wake = h.pointee.space_waiters > 0
        if wake { h.pointee.space_seq &+= 1 }
        jr_mutex_unlock(&h.pointee.alloc_lock)
        if wake { _ = jr_futex_wake(&h.pointee.space_seq, Int32.max) }
    }

    /// Takes the first block of a class's free list (alloc_lock held); 0 if empty.
    private static func pop<T>(_ heads: inout T, _ c: UInt64) -> UInt64 {
        withUnsafeMutableBytes(of: &heads) { raw in
            let list = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            let off = list[Int(c)]
            if off != 0 { list[Int(c)] = pointer(off).assumingMemoryBound(to: jr_block.self).pointee.next }
            return off
        }
    }

    /// Puts a block at the front of a class's free list (alloc_lock held).
    private static func push<T>(_ heads: inout T, _ c: UInt64, _ blockOffset: UInt64) {
        withUnsafeMutableBytes(of: &heads) { raw in
            let list = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            pointer(blockOffset).assumingMemoryBound(to: jr_block.self).pointee.next = list[Int(c)]
            list[Int(c)] = blockOffset
        }
    }

    private static func residentCount(_ h: UnsafeMutablePointer<jr_arena_header>, _ c: UInt64) -> UnsafeMutablePointer<UInt32> {
        withUnsafeMutablePointer(to: &h.pointee.free_resident) {
            UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt32.self) + Int(c)
        }
    }

    /// Sleeps until some block is freed, the deadline passes or the monitor
    /// gives a verdict on this wait (returned). The wait is noted in the
    /// process's record as what it is (JR_WAIT_MEMORY), with no sleep
    /// slices: when every live process waits and none can free memory, the
    /// monitor declares a deadlock and wakes it. The process's share of
    /// `space_waiters` is noted in its record too (`space_waiting`, under
    /// the lock), so the monitor takes it back if the process dies asleep.
    ///
    /// `need` is the payload the caller failed to allocate: if a block was
    /// freed since, so that it now fits, it returns at once; past that check,
    /// made under the lock as the waiter is counted, every free wakes it.
    static func waitForSpace(_ need: Int, _ deadline: Deadline) -> String? {
        let h = header
        let me = ProcessRegistry.record
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        if h.pointee.in_use + (UInt64(1) << sizeClass(for: need)) <= h.pointee.limit {
            jr_mutex_unlock(&h.pointee.alloc_lock)
            return nil
        }
        let seq = h.pointee.space_seq
        h.pointee.space_waiters += 1
        if let me { me.pointee.space_waiting = 1 }
        jr_mutex_unlock(&h.pointee.alloc_lock)
        TestHooks.killPoint("memory-waits")
        ProcessRegistry.willWait(JR_WAIT_MEMORY, object: UnsafeRawPointer(h), word: &h.pointee.space_seq, value: seq,
                                 timed: deadline.at != nil)
        let r = jr_futex_wait(&h.pointee.space_seq, seq, deadline.remaining)
        ProcessRegistry.didWait(r)
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        h.pointee.space_waiters -= 1
        if let me { me.pointee.space_waiting = 0 }
        jr_mutex_unlock(&h.pointee.alloc_lock)
        return ProcessRegistry.takeVerdict()
    }

    enum MemoryWait { case success(UInt64), full, noMemory(String), failed(String) }

    /// Allocates an item's block, waiting for memory when blocking:
    /// `.full` when not blocking or the deadline passed, `.noMemory` when it
    /// can never fit, `.failed` with the monitor's verdict on the wait (a
    /// deadlock) when memory has still not come.
    static func allocateWaiting(_ n: Int, block: Bool, deadline: Deadline,
                                recordingIn slot: UnsafeMutablePointer<UInt64>? = nil) -> MemoryWait {
        while true {
            do {
                return .success(try allocate(n, recordingIn: slot))
            } catch .overLimit(let need, _, let limit) {
                if need > limit {
                    return .noMemory("item of \(n) bytes is larger than the shared memory limit (\(limit >> 20) MiB)")
                }
                let w = waitForMemory(n, block: block, deadline: deadline)
                if case .success = w { continue }
                // A verdict can cross a free: raise it only if memory has still not come.
                if case .failed = w, let off = try? allocate(n, recordingIn: slot) { return .success(off) }
                return w
            } catch {
                return .noMemory("shared memory address space exhausted")
            }
        }
    }

    /// One wait for memory for `need` bytes to be freed: `.success(0)` once
    /// some was (or a wake came), else why not.
    static func waitForMemory(_ need: Int, block: Bool, deadline: Deadline) -> MemoryWait {
        if !block || deadline.expired { return .full }
        if let verdict = waitForSpace(need, deadline) { return .failed(verdict) }
        return .success(0)
    }

    /// The monitor, after `r`'s process died: takes back its share of
    /// `space_waiters` if it died waiting for memory.
    static func forgetWaiter(_ r: UnsafeMutablePointer<jr_process_record>) {
        let h = header
        _ = jr_mutex_lock(&h.pointee.alloc_lock)
        if r.pointee.space_waiting != 0 {
            h.pointee.space_waiters -= 1
            r.pointee.space_waiting = 0
        }
        jr_mutex_unlock(&h.pointee.alloc_lock)
    }

    static func nextObjectID() -> UInt32 {
        jr_add_u32(&header.pointee.next_object_id, 1)
    }

    public static var bytesInUse: UInt64 { jr_load_u64(&header.pointee.in_use) }
    public static var limit: UInt64 { header.pointee.limit }
}
