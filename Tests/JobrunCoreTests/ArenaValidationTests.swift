import CJobrunShims
import Testing
@testable import JobrunCore

@Suite("The allocator refuses offsets that are not its blocks")
struct ArenaValidationTests {
    @Test func doubleFreeIsRefusedAndLeavesTheArenaConsistent() throws {
        #expect(arenaReady)
        let a = try Arena.allocate(100)
        let inUse = Arena.bytesInUse
        #expect(Arena.free(a))
        #expect(Arena.bytesInUse == inUse - 128)
        #expect(!Arena.free(a), "a second free of the same block")
        #expect(Arena.bytesInUse == inUse - 128)
        // The block is handed out once, not twice.
        let b = try Arena.allocate(100), c = try Arena.allocate(100)
        #expect(b != c)
        #expect(Arena.free(b) && Arena.free(c))
    }

    @Test func offsetsOutsideBlocksAreRefused() throws {
        #expect(arenaReady)
        let a = try Arena.allocate(1000)
        defer { Arena.free(a) }
        let inUse = Arena.bytesInUse
        for bad: UInt64 in [0, 8, 16, a + 8, a - 8, a + 1024, 1 << 40, UInt64.max - 15, UInt64.max] {
            #expect(!Arena.free(bad), "free(\(bad))")
            #expect(Arena.allocatedBlock(payload: bad, count: 0) == nil, "allocatedBlock(\(bad))")
        }
        #expect(Arena.bytesInUse == inUse)
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
