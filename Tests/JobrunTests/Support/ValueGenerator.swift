@testable import Jobrun

/// SplitMix64: a small seeded generator, so a failing value can be made again.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// Random LuaValues that favour the edges of the format: integers at the
/// varint and zigzag boundaries, every kind of float bit pattern, strings
/// with NULs and bytes that are not UTF-8, tables with holes, keys that
/// Lua normalises (2.0, -0.0), keys just past the array part, tables as keys.
struct ValueGenerator {
    var rng: SplitMix64

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    static let integers: [Int64] = [0, 1, -1, 63, 64, -64, -65, 127, 128, 255, 256, 1 << 31, -(1 << 31),
                                    Int64(Int32.max), 1 << 53, (1 << 53) + 1, Int64.max, Int64.min, Int64.max - 1, Int64.min + 1]
    static let floats: [Double] = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, .nan, -.nan, Double(bitPattern: 0x7FF0_0000_0000_0001),
                                   Double(bitPattern: 0x7FF8_0000_DEAD_BEEF), .infinity, -.infinity, .greatestFiniteMagnitude,
                                   .leastNonzeroMagnitude, .leastNormalMagnitude, 9223372036854775808.0, -9223372036854775808.0,
                                   1e100, 0.1, 4503599627370496.5]

    mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    mutating func integer() -> Int64 {
        switch int(4) {
        case 0: return Self.integers[int(Self.integers.count)]
        case 1: return Int64(int(41)) - 20
        case 2: return Int64(bitPattern: rng.next())
        default: return Int64(bitPattern: rng.next()) >> Int64(int(64))
        }
    }

    mutating func float() -> Double {
        switch int(3) {
        case 0: return Self.floats[int(Self.floats.count)]
        case 1: return Double(bitPattern: rng.next())
        default: return Double(int(2001) - 1000) / 8
        }
    }

    mutating func bytes() -> [UInt8] {
        let n = int(4) == 0 ? int(300) : int(12)
        switch int(4) {
        case 0: return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }        // binary, NULs, not UTF-8
        case 1: return Array("héllo wörld ✓ \u{0}".utf8.prefix(n))                       // may cut a character: not UTF-8
        default: return (0..<n).map { _ in UInt8(97 + int(26)) }
        }
    }

    mutating func scalar() -> LuaValue {
        switch int(7) {
        case 0: return .boolean(int(2) == 0)
        case 1, 2: return .integer(integer())
        case 3: return .number(float())
        case 4: return .nil
        default: return .string(bytes())
        }
    }

    /// A key a Lua table can hold (not nil, not NaN).
    mutating func key(arrayCount n: Int, depth: Int) -> LuaValue {
        switch int(8) {
        case 0: return .integer(Int64(n + 1 + int(3)))          // just past the array part: joins it or not
        case 1: return .number([2.0, -0.0, 1.0, 0.5, Double(n + 1)][int(5)])
        case 2: return .boolean(int(2) == 0)
        case 3 where depth < 3:
            let v = value(depth: depth + 1, maxDepth: depth + 2)
            if case .table = v { return v }
            return "t"

        case 4: return .integer(integer())
        default:
            let v = scalar()
            if v == .nil { return "k" }
            if case .number(let d) = v, d.isNaN { return 0.25 }
            return v
        }
    }

    mutating func value(depth: Int = 0, maxDepth: Int = 5) -> LuaValue {
        if depth >= maxDepth || int(3) != 0 { return scalar() }
        var t = LuaTable()
        let n = int(4) == 0 ? 0 : int(8)
        var elements: [LuaValue] = []
        for _ in 0..<n { elements.append(int(10) == 0 ? .nil : value(depth: depth + 1, maxDepth: maxDepth)) }
        t = LuaTable(array: elements)
        for _ in 0..<int(6) {
            t[key(arrayCount: t.array.count, depth: depth)] = value(depth: depth + 1, maxDepth: maxDepth)
        }
        return .table(t)
    }
}
