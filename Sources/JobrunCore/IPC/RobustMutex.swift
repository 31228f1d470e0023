import CJobrunShims
import Glibc
import SystemPackage

/// The one way to take a robust, process-shared mutex in the arena.
///
/// A process may be SIGKILLed while it holds one. The next locker is then
/// told so (EOWNERDEAD) and holds the mutex in an inconsistent state: it
/// must put right what the dead holder left half done, from the intent that
/// holder wrote, and mark the mutex consistent before it unlocks (a mutex
/// unlocked while inconsistent can never be locked again). Every lock site
/// says how, as the `ownerDied` argument:
///
/// - a repair from the intent (the allocator, a queue, the dict, a pool);
/// - `RobustMutex.nothingToRepair`, with a comment at the site saying why
///   every state a holder can die in is one the other processes accept.
///
/// No site ignores the answer: the mutex is marked consistent only here,
/// after the repair has run.
enum RobustMutex {
    /// For a lock whose holder leaves nothing half done when it dies: the
    /// site's comment says why.
    static let nothingToRepair: @Sendable () -> Void = {}

    /// Locks `m`; if its owner died holding it, runs `ownerDied` (lock held)
    /// and then marks it consistent.
    @inline(__always)
    static func lock(_ m: UnsafeMutablePointer<pthread_mutex_t>, ownerDied repair: () -> Void) {
        let r = jr_mutex_lock(m)
        if _fastPath(r == 0) { return }
        settle(m, r, repair)
    }

    /// Locks `m` only if it is free (for the monitor, which must not wait on
    /// a lock a stopped process holds): false when it is busy. A dead
    /// owner's state is repaired as by `lock`.
    static func tryLock(_ m: UnsafeMutablePointer<pthread_mutex_t>, ownerDied repair: () -> Void) -> Bool {
        let r = jr_mutex_trylock(m)
        if r == -EBUSY { return false }
        if r != 0 { settle(m, r, repair) }
        return true
    }

    @inline(__always)
    static func unlock(_ m: UnsafeMutablePointer<pthread_mutex_t>) { jr_mutex_unlock(m) }

    private static func settle(_ m: UnsafeMutablePointer<pthread_mutex_t>, _ r: Int32, _ repair: () -> Void) {
        // Any other error (EINVAL, ENOTRECOVERABLE) means a mutex that was
        // never initialised or was unlocked inconsistent: a jobrun bug.
        precondition(r == JR_OWNER_DIED, "pthread_mutex_lock: \(Errno(rawValue: -r)) (a jobrun bug)")
        repair()
        jr_mutex_consistent(m)
    }
}
