import Atomics
import CJobrunShims
import Glibc
import Testing
@testable import JobrunCore

extension OneArena {
@Suite("A robust mutex whose holder died is repaired by whoever locks it next")
struct RobustMutexTests {
    init() { _ = arenaReady }

    /// A child is killed inside an allocation, holding alloc_lock. The next
    /// locker here is `allocatedBlock` (the check of a `script` worker's
    /// arguments), which used to take the lock dropping the "owner died"
    /// answer: the allocation stayed half done for good (its block lost,
    /// `in_use` too high) and no later locker could repair it.
    @Test func everyAllocatorLockSiteRepairsADeadHolder() throws {
        let a = try Arena.allocate(1000)
        defer { Arena.free(a) }
        let h = Arena.header
        let inUse = h.pointee.in_use
        let pid = fork()
        if pid == 0 {
            setenv("JOBRUN_TEST_KILL_AT", "arena-allocate-popped", 1)
            TestHooks.load()
            _ = try? Arena.allocate(3000)
            _exit(3)                                  // not reached: killed inside
        }
        #expect(pid > 0)
        #expect(reap(pid) == -SIGKILL, "the child died inside the allocation")
        #expect(h.atomic(\.alloc_op).load(ordering: .acquiring) == UInt32(JR_ALLOC_ALLOCATE), "its intent is pending")
        #expect(Arena.allocatedBlock(payload: a, count: 1000) != nil)
        #expect(h.atomic(\.alloc_op).load(ordering: .acquiring) == UInt32(JR_ALLOC_NONE), "rolled back by the next locker")
        #expect(h.pointee.in_use == inUse, "the dead child's block is free again")
    }
}
}

/// Waits (bounded: 10 s, then kills it) for a child; its exit code, or
/// minus the signal that ended it.
func reap(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    for _ in 0..<1000 {
        if waitpid(pid, &status, WNOHANG) == pid {
            return status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
        }
        usleep(10_000)
    }
    kill(pid, SIGKILL)
    _ = waitpid(pid, &status, 0)
    return -999
}
