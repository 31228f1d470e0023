import Atomics
import CJobrunShims
import Testing
@testable import JobrunCore

@Suite("Atomic views of the arena's words (SharedWord.swift)")
struct SharedWordTests {
    /// The views reinterpret a C struct's plain integer field as swift-atomics'
    /// representation of that integer: sound only while the two have one layout.
    @Test func anAtomicRepresentationHasTheLayoutOfItsWord() {
        func sameLayout<Word: AtomicInteger>(_: Word.Type) -> Bool {
            MemoryLayout<Word.AtomicRepresentation>.size == MemoryLayout<Word>.size
                && MemoryLayout<Word.AtomicRepresentation>.stride == MemoryLayout<Word>.stride
                && MemoryLayout<Word.AtomicRepresentation>.alignment == MemoryLayout<Word>.alignment
        }
        #expect(sameLayout(UInt32.self))
        #expect(sameLayout(UInt64.self))
        #expect(sameLayout(Int64.self))    // jr_process_record.end_ns, jr_progress_counter.first_ns
    }

    /// A view reaches the field itself: what it stores, a plain read of the
    /// field sees, and the other way round; its neighbours are untouched.
    @Test func aFieldsViewReadsAndWritesThatField() {
        let r = UnsafeMutablePointer<jr_process_record>.allocate(capacity: 1)
        defer { r.deallocate() }
        r.initialize(to: jr_process_record())
        r.atomic(\.get_stage).store(2, ordering: .releasing)
        r.atomic(\.get_queue).store(0x1234_5678_9abc, ordering: .releasing)
        #expect(r.pointee.get_stage == 2)
        #expect(r.pointee.get_queue == 0x1234_5678_9abc)
        #expect(r.pointee.done_stage == 0 && r.pointee.reserved3 == 0 && r.pointee.get_item_head == 0)
        r.pointee.wait_kind = 5
        #expect(r.atomic(\.wait_kind).load(ordering: .acquiring) == 5)
        #expect(r.atomic(\.end_ns).compareExchange(expected: 0, desired: 42, ordering: .acquiringAndReleasing).exchanged)
        #expect(!r.atomic(\.end_ns).compareExchange(expected: 0, desired: 7, ordering: .acquiringAndReleasing).exchanged)
        #expect(r.pointee.end_ns == 42)
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        defer { word.deallocate() }
        word.initialize(to: UInt32.max)
        word.atomic.wrappingIncrement(ordering: .acquiringAndReleasing)
        #expect(word.pointee == 0, "wraps, as the futex words' counters must")
    }
}
