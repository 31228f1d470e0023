import CLua
import CJobrunShims
import Glibc
import Testing
@testable import JobrunCore

@Suite("Process context")
struct ProcessContextTests {
    /// A descriptor of our own (/dev/null), to see afterFork close it.
    private func openDescriptor() -> Int32 {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        #expect(fd >= 0)
        return fd
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    /// What a forked worker drops (its parent's children, the monitor's
    /// pipe, the --stats-json file, the record) and what it keeps (the arena
    /// mapping, the buffers and metatables, the output settings) is said in
    /// one place.
    @Test func afterForkDropsWhatIsTheParentsAndKeepsTheRest() {
        let ctx = ProcessContext()
        let pidfd = openDescriptor(), doneFD = openDescriptor(), statsFD = openDescriptor()
        ctx.children.live = [4242]
        ctx.children.pidfds = [4242: pidfd]
        ctx.children.reaped = [4243: 0]
        ctx.children.isSubreaper = true
        ctx.supervision.monitorPid = 4244
        ctx.supervision.monitorDoneFD = doneFD
        ctx.supervision.terminal = (true, true)
        ctx.output.statsFD = statsFD
        ctx.output.prefix = true
        let record = UnsafeMutablePointer<jr_process_record>.allocate(capacity: 1)
        defer { record.deallocate() }
        ctx.own(record, slot: 1)
        ctx.identity.start = 7
        ctx.arena = ProcessContext.ArenaMapping(fd: 99, base: UnsafeMutableRawPointer(bitPattern: 0x1000), reservedBytes: 1 << 20)
        let meta = UnsafeRawPointer(bitPattern: 0x2000)
        ctx.hot.pointee.queueMeta = meta
        ctx.hot.pointee.cachedQueue = 64
        ctx.objects.failedTold = [64: 1]

        ctx.afterFork()

        #expect(ctx.children.live.isEmpty && ctx.children.pidfds.isEmpty && ctx.children.reaped.isEmpty)
        #expect(!ctx.children.isSubreaper)
        #expect(!isOpen(pidfd) && !isOpen(doneFD) && !isOpen(statsFD))
        #expect(ctx.supervision.monitorPid == 0 && ctx.supervision.monitorDoneFD == -1)
        #expect(ctx.supervision.terminal == nil)
        #expect(ctx.output.statsFD == nil)
        #expect(ctx.record == nil && ctx.hot.pointee.recordSlot == 0 && ctx.identity.start == 0)
        #expect(!ctx.identity.isMain && !ctx.identity.ownsState)
        #expect(ctx.hot.pointee.cachedQueue == 0)
        // Kept.
        #expect(ctx.output.prefix)
        #expect(ctx.arena.fd == 99 && ctx.arena.reservedBytes == 1 << 20)
        #expect(ctx.hot.pointee.queueMeta == meta)
        #expect(ctx.objects.failedTold == [64: 1])
    }

    /// A state made by the host carries the process's context, and so does
    /// every coroutine made in it (Lua copies the extra space).
    @Test func aStateAndItsCoroutinesCarryTheContext() throws {
        let L = try #require(luaL_newstate())
        defer { lua_close(L) }
        ProcessContext.current.install(in: L)
        let co = try #require(lua_newthread(L))
        #expect(ProcessContext.of(L) === ProcessContext.current)
        #expect(ProcessContext.of(co) === ProcessContext.current)
        #expect(ProcessContext.hot(co) == ProcessContext.current.hot)
    }
}
