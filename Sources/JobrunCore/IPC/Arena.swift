import Atomics
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
    /// Address space reserved for the arena (not memory: see above); smaller
    /// when a limit on address space (ulimit -v) refuses the first choice.
    public static var reservedBytes: UInt64 { ProcessContext.processHot.pointee.arena.reservedBytes }
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

    /// The mapping is this process's (ProcessContext.arena), set once by
    /// `create` or `attach`.
    public static var fd: Int32 { ProcessContext.processHot.pointee.arena.fd }
    public static var base: UnsafeMutableRawPointer! {
        @inline(__always) get { ProcessContext.processHot.pointee.arena.base }
    }
    static var header: UnsafeMutablePointer<jr_arena_header> { base.assumingMemoryBound(to: jr_arena_header.self) }

    public static var isAttached: Bool { base != nil }

    /// Creates the arena of a new run (in the main process, before any worker).
    public static func create(limit: UInt64?) throws {
        let created = jr_memfd_create("jobrun-arena")
        if created < 0 { throw JobrunError(call: "memfd_create", errno: Glibc.errno) }
        // Close-on-exec (programs started by os.execute must not hold the run's
        // memory), and numbered above the descriptors a worker is handed (3).
        let fd = jr_dup_cloexec(created, 10)
        close(created)
        if fd < 0 { throw JobrunError(call: "fcntl(F_DUPFD_CLOEXEC)", errno: Glibc.errno) }
        var size: UInt64 = 256 << 30
        while true {
            do {
                try retryingEINTR("ftruncate") { ftruncate(fd, off_t(size)) }
                try map(fd: fd, size: size)
                break
            } catch let e as JobrunError where (e.errno == .noMemory || e.errno == .invalidArgument) && size > 256 << 20 {
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
        _ = jr_mutex_init(&h.pointee.objects_lock)
        let n = withUnsafeMutableBytes(of: &h.pointee.token) { jr_getrandom($0.baseAddress, UInt($0.count)) }
        if n != 16 { throw JobrunError(call: "getrandom", errno: Glibc.errno) }
    }

    /// The run's token in hex (32 digits), for `--worker-token`.
    public static var tokenText: String {
        withUnsafeBytes(of: &header.pointee.token) { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
    }

    /// Why a descriptor is not this run's arena.
    public struct AttachFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Maps an arena created by another process of the run (a `script`
    /// worker), after checking that the descriptor is that arena: a memfd of
    /// the size its header says, carrying the run's `token` (32 hex digits).
    public static func attach(fd: Int32, token: String) throws {
        guard let wanted = parseToken(token) else {
            throw AttachFailure(description: "the run's token must be 32 hex digits, got '\(token)'")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw JobrunError(call: "fstat", errno: Glibc.errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG, isMemfd(fd) else {
            throw AttachFailure(description: "descriptor \(fd) is not the run's shared memory (not a memfd)")
        }
        let size = UInt64(st.st_size)
        guard size >= headerBytes else {
            throw AttachFailure(description: "descriptor \(fd) is not the run's shared memory (\(size) bytes)")
        }
        try map(fd: fd, size: size)
        let h = header
        let same = withUnsafeBytes(of: &h.pointee.token) { Array($0) == wanted }
        guard h.pointee.magic == JR_ARENA_MAGIC, h.pointee.size == size, same,
              h.pointee.top >= headerBytes, h.pointee.top <= size else {
            munmap(base, Int(size))
            ProcessContext.current.arena = ProcessContext.ArenaMapping()
            throw AttachFailure(description: "descriptor \(fd) is not this run's shared memory")
        }
    }

    /// Unmaps the arena and forgets it (not its descriptor, which the caller
    /// owns). Only the fuzz target needs it: it attaches forged descriptors
    /// over and over in one process.
    static func detach() {
        if let b = base { munmap(b, Int(reservedBytes)) }
        ProcessContext.current.arena = ProcessContext.ArenaMapping()
    }

    /// Whether `fd` is a memfd: its /proc link reads "/memfd:NAME (deleted)".
    private static func isMemfd(_ fd: Int32) -> Bool {
        var buf = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buf, buf.count - 1)
        guard n > 0 else { return false }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/memfd:")
    }

    private static func parseToken(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count == 32 else { return nil }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: 32, by: 2) {
            guard let b = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(b)
        }
        return bytes
    }

    /// The allocated block holding `count` bytes at payload offset `offset`,
    /// or nil: the offset is out of the arena, not a block's payload, the
    /// block is free, or it is shorter than `count`. For offsets that come
    /// from outside this process (a `script` worker's arguments).
    static func allocatedBlock(payload offset: UInt64, count: Int) -> UInt64? {
        let h = header
        lockAllocator(h)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        guard let c = validBlockLocked(payload: offset) else { return nil }
        guard count >= 0, UInt64(count) <= (UInt64(1) << c) - UInt64(MemoryLayout<jr_block>.size) else { return nil }
        return c
    }

    /// The size class of the allocated block whose payload is at `offset`
    /// (alloc_lock held); nil when there is no such block.
    private static func validBlockLocked(payload offset: UInt64) -> UInt64? {
        let h = header
        let blockBytes = UInt64(MemoryLayout<jr_block>.size)
        guard offset >= headerBytes + blockBytes, offset <= h.pointee.top else { return nil }
        let blockOffset = offset - blockBytes
        guard blockOffset % 32 == 0 else { return nil }   // every block is aligned to its size (>= 32)
        let b = pointer(blockOffset).assumingMemoryBound(to: jr_block.self)
        guard b.pointee.next == allocatedMarker else { return nil }
        let c = b.pointee.size_class
        guard c >= 5, c < UInt64(JR_NCLASSES), blockOffset + (UInt64(1) << c) <= h.pointee.top else { return nil }
        return c
    }

    private static func map(fd: Int32, size: UInt64) throws {
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0)
        if p == MAP_FAILED || p == nil { throw JobrunError(call: "mmap", errno: Glibc.errno) }
        ProcessContext.current.arena = ProcessContext.ArenaMapping(fd: fd, base: p, reservedBytes: size)
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

    /// The class of a block holding `payload` bytes; `tooLargeClass` (one
    /// past the largest class, which has no free list) when no class holds it,
    /// so that a size computed from user input is refused, not an index past
    /// the free lists (or an overflow trap).
    static func sizeClass(for payload: Int) -> UInt64 {
        guard payload >= 0, UInt64(payload) <= (UInt64(1) << (tooLargeClass - 1)) - UInt64(MemoryLayout<jr_block>.size) else {
            return tooLargeClass
        }
        let total = UInt64(payload) + UInt64(MemoryLayout<jr_block>.size)
        var c: UInt64 = 5
        while (UInt64(1) << c) < total { c += 1 }
        return c
    }
    static let tooLargeClass = UInt64(JR_NCLASSES)

    enum AllocFailure: Error { case overLimit(need: UInt64, inUse: UInt64, limit: UInt64), exhausted }

    /// The value a block's `next` holds while it is allocated.
    static let allocatedMarker: UInt64 = 0x616c6c6f63656421 // "allocated"

    // MARK: Dying under alloc_lock
    //
    // A process may be SIGKILLed at any instruction, also while it holds
    // alloc_lock halfway through changing a free list, `top` and `in_use`.
    // So before it changes anything, the holder writes its intent into the
    // header (jr_arena_header.alloc_*): the block, where it comes from or
    // goes to, and the values it is about to overwrite, all read under the
    // lock; `alloc_op` is stored last and cleared when the change is whole.
    // The next locker is told the owner died (RobustMutex.lock) and
    // runs `repairAllocator` first: an allocation is rolled back (its caller
    // died before it could use the block), a free is rolled forward (its
    // caller had given the block up). A caller that must not lose a block
    // between the allocator and its own record passes the record's field:
    // the allocator sets it (allocate, its last step) or zeroes it (free)
    // under its lock. So the field names the block exactly while the block
    // is the caller's: an allocation whose field was set is whole (kept for
    // the caller's repair), a free completed by a repair clears it, and a
    // later `free(_, clearingOffset:)` of a block its field no longer names
    // does nothing (a repairer that read the field before the allocator's
    // repair ran does not free the block twice).

    /// Takes alloc_lock, repairing what a holder that died left half done.
    @inline(__always)
    static func lockAllocator(_ h: UnsafeMutablePointer<jr_arena_header>) {
        RobustMutex.lock(&h.pointee.alloc_lock) { repairAllocator(h) }
    }

    /// Makes sure no half-done allocation or free of a dead process is
    /// pending (a repair that reads fields the allocator sets calls it first).
    static func settle() {
        let h = header
        lockAllocator(h)
        jr_mutex_unlock(&h.pointee.alloc_lock)
    }

    /// The heads of free_heads (source 0) or punched_heads (source 1).
    private static func heads(_ h: UnsafeMutablePointer<jr_arena_header>, _ source: UInt64) -> UnsafeMutablePointer<UInt64> {
        if source == 0 {
            return withUnsafeMutablePointer(to: &h.pointee.free_heads) { UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt64.self) }
        }
        return withUnsafeMutablePointer(to: &h.pointee.punched_heads) { UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt64.self) }
    }

    private static func block(_ blockOffset: UInt64) -> UnsafeMutablePointer<jr_block> {
        pointer(blockOffset).assumingMemoryBound(to: jr_block.self)
    }

    /// The arena offset of a caller's field (0: none); it must be in the arena.
    private static func destOffset(_ dest: UnsafeMutableRawPointer?) -> UInt64 {
        guard let dest else { return 0 }
        let off = offset(of: dest)
        precondition(off > 0 && off < header.pointee.size, "allocator record field outside the arena")
        return off
    }

    /// alloc_lock held after its owner died: finishes or undoes its change.
    private static func repairAllocator(_ h: UnsafeMutablePointer<jr_arena_header>) {
        let op = Int(h.atomic(\.alloc_op).load(ordering: .acquiring))
        if op == JR_ALLOC_NONE { return }
        let c = UInt64(h.pointee.alloc_class), blockOffset = h.pointee.alloc_block, source = h.pointee.alloc_source
        let size = UInt64(1) << c
        let b = block(blockOffset)
        let payloadOffset = blockOffset + UInt64(MemoryLayout<jr_block>.size)
        if op == JR_ALLOC_ALLOCATE && h.pointee.alloc_dest != 0
            && pointer(h.pointee.alloc_dest).atomic(UInt64.self).load(ordering: .acquiring) == payloadOffset {
            // The caller's record names the block (its last step): the
            // allocation is whole and the block the caller's, whose own
            // repair frees it; undoing it now would free it twice.
        } else if op == JR_ALLOC_ALLOCATE {
            if source < 2 {
                b.pointee.next = h.pointee.alloc_link
                b.pointee.size_class = h.pointee.alloc_word
                heads(h, source)[Int(c)] = blockOffset
            } else {
                h.pointee.top = h.pointee.alloc_top
            }
            h.pointee.in_use = h.pointee.alloc_in_use
            clearDest(h, blockOffset)
        } else {
            b.pointee.size_class = h.pointee.alloc_word
            b.pointee.next = h.pointee.alloc_link
            heads(h, source)[Int(c)] = blockOffset
            h.pointee.in_use = h.pointee.alloc_in_use - size
            clearDest(h, blockOffset)
            if h.pointee.alloc_dest32 != 0 { pointer(h.pointee.alloc_dest32).atomic(UInt32.self).store(0, ordering: .releasing) }
            h.pointee.space_seq &+= 1
            _ = jr_futex_wake(&h.pointee.space_seq, Int32.max)
        }
        // How many free blocks of the class kept their pages: count them.
        var resident: UInt32 = 0
        var at = heads(h, 0)[Int(c)]
        while at != 0 {
            if block(at).pointee.size_class & residentFlag != 0 { resident += 1 }
            at = block(at).pointee.next
        }
        residentCount(h, c).pointee = resident
        h.atomic(\.alloc_op).store(UInt32(JR_ALLOC_NONE), ordering: .releasing)
    }

    /// The repair's share of the caller's field: zeroed if it names the block.
    private static func clearDest(_ h: UnsafeMutablePointer<jr_arena_header>, _ blockOffset: UInt64) {
        let dest = h.pointee.alloc_dest
        if dest == 0 { return }
        let field = pointer(dest).atomic(UInt64.self)
        if field.load(ordering: .acquiring) == blockOffset + UInt64(MemoryLayout<jr_block>.size) { field.store(0, ordering: .releasing) }
    }

    /// Allocates a block and returns the offset of its payload. With
    /// `recordingIn` (a u64 field in the arena, part of the caller's intent:
    /// its process record, a Dict), the offset is stored there too before
    /// the lock is released, so a SIGKILL just after the call cannot lose
    /// the block: the intent names it.
    static func allocate(_ payload: Int, recordingIn slot: UnsafeMutablePointer<UInt64>? = nil) throws(AllocFailure) -> UInt64 {
        let c = sizeClass(for: payload)
        let size = UInt64(1) << c
        let h = header
        if c >= tooLargeClass { throw .exhausted }   // larger than the arena itself
        let destOff = destOffset(slot)
        lockAllocator(h)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        if h.pointee.in_use + size > h.pointee.limit {
            throw .overLimit(need: size, inUse: h.pointee.in_use, limit: h.pointee.limit)
        }
        // A block that kept its pages first: reusing a punched one while
        // resident ones wait would fault in every page of every item.
        var source: UInt64 = 0
        var blockOffset = heads(h, 0)[Int(c)]
        if blockOffset == 0 { source = 1; blockOffset = heads(h, 1)[Int(c)] }
        if blockOffset == 0 {
            source = 2
            let align = min(size, 4096)
            let start = (h.pointee.top + align - 1) & ~(align - 1)
            if start + size > h.pointee.size { throw .exhausted }
            blockOffset = start
        }
        let b = block(blockOffset)
        h.pointee.alloc_class = UInt32(c)
        h.pointee.alloc_block = blockOffset
        h.pointee.alloc_source = source
        h.pointee.alloc_link = source < 2 ? b.pointee.next : 0
        h.pointee.alloc_word = source < 2 ? b.pointee.size_class : 0
        h.pointee.alloc_in_use = h.pointee.in_use
        h.pointee.alloc_top = h.pointee.top
        h.pointee.alloc_dest = destOff
        h.pointee.alloc_dest32 = 0
        h.atomic(\.alloc_op).store(UInt32(JR_ALLOC_ALLOCATE), ordering: .releasing)
        if source < 2 {
            heads(h, source)[Int(c)] = b.pointee.next
            if b.pointee.size_class & residentFlag != 0 { residentCount(h, c).pointee -= 1 }
        } else {
            h.pointee.top = blockOffset + size
        }
        TestHooks.killPoint("arena-allocate-popped")
        h.pointee.in_use += size
        if h.pointee.in_use > h.pointee.peak { h.pointee.peak = h.pointee.in_use }
        b.pointee.size_class = c
        b.pointee.next = allocatedMarker
        let payloadOffset = blockOffset + UInt64(MemoryLayout<jr_block>.size)
        if let slot { slot.atomic.store(payloadOffset, ordering: .releasing) }
        h.atomic(\.alloc_op).store(UInt32(JR_ALLOC_NONE), ordering: .releasing)
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
        lockAllocator(h)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        return b.pointee.next == allocatedMarker
    }

    /// Returns a block; large ones give their pages back to the system.
    /// `clearing` / `clearingOffset` (a stage or block field of the caller's
    /// record, in the arena) are zeroed under the allocator's lock as the
    /// block goes back, so an intent that names the block is cleared exactly
    /// when it is freed (a repair after a death in between completes both).
    /// An offset that is not an allocated block's payload (a double free, an
    /// offset out of the arena) is refused: false, and nothing changes but
    /// the `clearing` fields (the block they name is not allocated).
    @discardableResult
    static func free(_ payloadOffset: UInt64, clearing: UnsafeMutablePointer<UInt32>? = nil,
                     clearingOffset: UnsafeMutablePointer<UInt64>? = nil) -> Bool {
        let h = header
        let destOff = destOffset(clearingOffset), dest32Off = destOffset(clearing)
        lockAllocator(h)
        if let clearingOffset, clearingOffset.atomic.load(ordering: .acquiring) != payloadOffset {
            jr_mutex_unlock(&h.pointee.alloc_lock)   // already freed by a repair (see above)
            return false
        }
        guard let c = validBlockLocked(payload: payloadOffset) else {
            if let clearing { clearing.atomic.store(0, ordering: .releasing) }
            if let clearingOffset { clearingOffset.atomic.store(0, ordering: .releasing) }
            jr_mutex_unlock(&h.pointee.alloc_lock)
            return false
        }
        let blockOffset = payloadOffset - UInt64(MemoryLayout<jr_block>.size)
        let b = block(blockOffset)
        let size = UInt64(1) << c
        var resident = false, punched = false
        if c >= punchClass {
            if c < alwaysPunchClass && UInt64(residentCount(h, c).pointee + 1) * size <= residentBytesPerClass {
                resident = true
            } else {
                // Give the pages back, except the header page (it holds the
                // free-list link), before the block can be handed out again.
                // The block is still the caller's meanwhile: a death here is
                // the caller's to repair, as one just before the call.
                jr_mutex_unlock(&h.pointee.alloc_lock)
                _ = jr_punch_hole(fd, blockOffset + 4096, size - 4096)
                lockAllocator(h)
                punched = true
            }
        }
        let source: UInt64 = punched ? 1 : 0
        h.pointee.alloc_class = UInt32(c)
        h.pointee.alloc_block = blockOffset
        h.pointee.alloc_source = source
        h.pointee.alloc_link = heads(h, source)[Int(c)]
        h.pointee.alloc_word = resident ? c | residentFlag : c
        h.pointee.alloc_in_use = h.pointee.in_use
        h.pointee.alloc_dest = destOff
        h.pointee.alloc_dest32 = dest32Off
        h.atomic(\.alloc_op).store(UInt32(JR_ALLOC_FREE), ordering: .releasing)
        b.pointee.size_class = h.pointee.alloc_word
        b.pointee.next = h.pointee.alloc_link
        heads(h, source)[Int(c)] = blockOffset
        TestHooks.killPoint("arena-free-pushed")
        if resident { residentCount(h, c).pointee += 1 }
        h.pointee.in_use -= size
        if let clearing { clearing.atomic.store(0, ordering: .releasing) }
        if let clearingOffset { clearingOffset.atomic.store(0, ordering: .releasing) }
        let wake = h.pointee.space_waiters > 0
        if wake { h.pointee.space_seq &+= 1 }
        h.atomic(\.alloc_op).store(UInt32(JR_ALLOC_NONE), ordering: .releasing)
        jr_mutex_unlock(&h.pointee.alloc_lock)
        if wake { _ = jr_futex_wake(&h.pointee.space_seq, Int32.max) }
        return true
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
    static func waitForSpace(_ need: Int, _ deadline: Deadline) -> JobrunError? {
        let h = header
        let me = ProcessRegistry.record
        lockAllocator(h)
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
        lockAllocator(h)
        h.pointee.space_waiters -= 1
        if let me { me.pointee.space_waiting = 0 }
        jr_mutex_unlock(&h.pointee.alloc_lock)
        return ProcessRegistry.takeVerdict()
    }

    enum MemoryWait { case success(UInt64), full, noMemory(String), failed(JobrunError) }

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
        lockAllocator(h)
        if r.pointee.space_waiting != 0 {
            h.pointee.space_waiters -= 1
            r.pointee.space_waiting = 0
        }
        jr_mutex_unlock(&h.pointee.alloc_lock)
    }

    static func nextObjectID() -> UInt32 {
        header.atomic(\.next_object_id).wrappingIncrementThenLoad(ordering: .acquiringAndReleasing)
    }

    /// Bytes in blocks on the free lists (walks them; for tests).
    static var bytesListedFree: UInt64 {
        let h = header
        lockAllocator(h)
        defer { jr_mutex_unlock(&h.pointee.alloc_lock) }
        var total: UInt64 = 0
        for source: UInt64 in [0, 1] {
            for c in 0..<Int(JR_NCLASSES) {
                var at = heads(h, source)[c]
                while at != 0 { total += UInt64(1) << UInt64(c); at = block(at).pointee.next }
            }
        }
        return total
    }

    public static var bytesInUse: UInt64 { header.atomic(\.in_use).load(ordering: .acquiring) }
    public static var limit: UInt64 { header.pointee.limit }
}
