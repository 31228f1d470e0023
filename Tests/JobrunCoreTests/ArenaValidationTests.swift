import CJobrunShims
import Testing
@testable import JobrunCore

extension OneArena {
@Suite("The allocator refuses offsets that are not its blocks")
struct ArenaValidationTests {
    @Test func doubleFreeIsRefusedAndLeavesTheArenaConsistent() throws {
        #expect(arenaReady)
        // Other suites use the same arena at the same time, so the checks
        // look at this block, not at the arena's totals, and it is of a size
        // class no other test uses (128 MiB of address space; its pages are
        // never touched), so no one else is handed it in between.
        let a = try Arena.allocate(100 << 20)
        #expect(Arena.free(a))
        #expect(!Arena.isAllocated(a))
        #expect(!Arena.free(a), "a second free of the same block")
        #expect(!Arena.isAllocated(a))
        // The block is handed out once, not twice.
        let b = try Arena.allocate(100 << 20), c = try Arena.allocate(100 << 20)
        #expect(b != c)
        #expect(Arena.free(b) && Arena.free(c))
    }

    /// Sizes past the largest class (2^39 bytes) used to overflow (Int.max:
    /// a trap) or index past the free lists; they are refused.
    @Test func sizesPastTheLargestClassAreRefused() {
        #expect(arenaReady)
        for n in [Int.max, Int.max - 8, 1 << 39, 1 << 62, -1, Int.min] {
            #expect(throws: Arena.AllocFailure.self, "allocate(\(n))") { try Arena.allocate(n) }
            #expect(Arena.sizeClass(for: n) == Arena.tooLargeClass, "sizeClass(for: \(n))")
        }
        #expect(Arena.sizeClass(for: (1 << 39) - 16) == 39)
        #expect(Arena.sizeClass(for: 0) == 5)
    }

    @Test func offsetsOutsideBlocksAreRefused() throws {
        #expect(arenaReady)
        let a = try Arena.allocate(1000)
        defer { Arena.free(a) }
        for bad: UInt64 in [0, 8, 16, a + 8, a - 8, a + 1024, 1 << 40, UInt64.max - 15, UInt64.max] {
            #expect(!Arena.free(bad), "free(\(bad))")
            #expect(Arena.allocatedBlock(payload: bad, count: 0) == nil, "allocatedBlock(\(bad))")
        }
        #expect(Arena.isAllocated(a), "a refused free leaves the block allocated")
        #expect(Arena.allocatedBlock(payload: a, count: 1000) != nil)
        #expect(Arena.allocatedBlock(payload: a, count: 1024 - 16) != nil)
        #expect(Arena.allocatedBlock(payload: a, count: 1024 - 15) == nil, "longer than the block")
        #expect(Arena.allocatedBlock(payload: a, count: -1) == nil)
    }

    @Test func tokenIsThirtyTwoHexDigits() {
        #expect(arenaReady)
        let t = Arena.tokenText
        #expect(t.count == 32 && t.allSatisfy(\.isHexDigit))
        #expect(t != String(repeating: "0", count: 32))
    }
}
}
