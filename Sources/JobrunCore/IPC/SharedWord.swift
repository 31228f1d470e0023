import Atomics

// Atomic access to the words of the shared arena, through swift-atomics.
//
// The arena's structs are C structs (jobrun_shims.h) whose atomically used
// fields are plain 4- or 8-byte integers, naturally aligned (its
// _Static_asserts). An integer's `AtomicRepresentation` in swift-atomics is
// a frozen struct holding one integer of the same width: the same size,
// stride and alignment as the field (SharedWordTests checks it), so an
// `UnsafeAtomic` over the field's address is an atomic access to the field
// itself, the same instruction C's `__atomic` builtins emit (swift-atomics
// reaches its own storage the same way). The key path names a stored field
// and is a literal at every call site, so its offset folds to a constant:
// a load in SharedQueue is one `mov`. (A key path, not `&q.pointee.count`:
// a pointer made from `&` is valid only during the call it is passed to,
// and a view outlives it. The folded offset is a few SIL instructions more
// than a field address, which the inliner counts: see SharedQueue.get.)
//
// Each access names its ordering. The rule of the arena: whatever one
// process publishes with a `.releasing` store, another reads with an
// `.acquiring` load; a counter bumped by several processes is
// `.acquiringAndReleasing`.
//
//     q.atomic(\.count).load(ordering: .acquiring)
//     me.atomic(\.get_stage).store(1, ordering: .releasing)
//     word.atomic.load(ordering: .acquiring)          // a pointer to the word itself
//     Arena.pointer(off).atomic(UInt64.self)          // a word named by its offset

extension UnsafeMutablePointer {
    /// The atomic view of `field`, a stored integer word (4 or 8 bytes) of
    /// the shared struct this points to.
    @inline(__always)
    func atomic<Word: AtomicInteger>(_ field: WritableKeyPath<Pointee, Word>) -> UnsafeAtomic<Word>
    where Word.AtomicRepresentation.Value == Word {
        guard let offset = MemoryLayout<Pointee>.offset(of: field) else {
            preconditionFailure("an atomic view needs a stored field")
        }
        return (UnsafeMutableRawPointer(self) + offset).atomic(Word.self)
    }
}

extension UnsafeMutablePointer where Pointee: AtomicInteger, Pointee.AtomicRepresentation.Value == Pointee {
    /// The atomic view of the integer word this points to.
    @inline(__always)
    var atomic: UnsafeAtomic<Pointee> { UnsafeMutableRawPointer(self).atomic(Pointee.self) }
}

extension UnsafeMutableRawPointer {
    /// The atomic view of the integer word at this address, an arena word
    /// named by its offset: `Arena.pointer(off).atomic(UInt64.self)`.
    @inline(__always)
    func atomic<Word: AtomicInteger>(_: Word.Type) -> UnsafeAtomic<Word>
    where Word.AtomicRepresentation.Value == Word {
        UnsafeAtomic(at: assumingMemoryBound(to: Word.AtomicRepresentation.self))
    }
}
