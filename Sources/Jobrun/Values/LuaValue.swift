/// A Lua value that can cross a process boundary: what a plug-in receives
/// as arguments and returns as results, and what travels through jobrun's
/// queues.
///
/// It is a plain Swift value (a tree, never shared, never cyclic), with the
/// Lua 5.4 types that are data:
///
/// ```swift
/// let args: LuaValue = ["path": "a.png", "width": 128, "scale": 0.5, "tags": ["x", "y"]]
/// args["width"].intValue        // 128
/// args["tags"][1]               // "x"   (Lua indexes start at 1)
/// ```
///
/// - Integers and floats stay apart, as Lua 5.4's `math.type` tells them
///   apart: `.integer(1)` and `.number(1.0)` are different values.
/// - A string is bytes, as in Lua: it may hold NULs and need not be UTF-8.
///   `LuaValue.string("text")` stores the UTF-8 bytes of a Swift string;
///   ``stringValue`` gives them back when they are valid UTF-8.
/// - A table is a ``LuaTable``: an array part (`t[1] ... t[n]`) and a hash
///   part (every other key), with the normalisation Lua applies.
///
/// Equality is structural and exact, so that `LuaValue` is a lawful
/// `Hashable`: two values are equal when they are the same type and the same
/// bits. `1` and `1.0` differ, `0.0` and `-0.0` differ, and a NaN equals a
/// NaN with the same bit pattern (Lua's `==` says otherwise for all three;
/// as table keys Lua turns `1.0` and `-0.0` into integers, and so does
/// ``LuaTable``).
///
/// What a `LuaValue` cannot hold: functions, coroutines, userdata, and
/// jobrun objects (queues, locks...). Values holding them do not convert.
public enum LuaValue: Sendable {
    /// Lua's `nil`. As a table value it means "no entry".
    case `nil`
    /// `true` or `false`.
    case boolean(Bool)
    /// A Lua integer (`math.type(v) == "integer"`): 64 bits, two's complement.
    case integer(Int64)
    /// A Lua float (`math.type(v) == "float"`); the bit pattern is kept
    /// exactly (NaN payloads, infinities, `-0.0`).
    case number(Double)
    /// A Lua string: any bytes, of any length.
    case string([UInt8])
    /// A Lua table.
    case table(LuaTable)

    /// The Lua string holding the UTF-8 bytes of `text`.
    public static func string(_ text: String) -> LuaValue {
        .string(Array(text.utf8))
    }

    /// The Lua string holding `bytes`; the same as `.string(bytes)`, spelled
    /// for call sites where the argument's type is not obvious.
    public static func bytes(_ bytes: some Sequence<UInt8>) -> LuaValue {
        .string(Array(bytes))
    }
}

extension LuaValue: Hashable {
    /// Structural, bit-exact equality (see the type's documentation).
    public static func == (a: LuaValue, b: LuaValue) -> Bool {
        switch (a, b) {
        case (.nil, .nil): return true
        case let (.boolean(x), .boolean(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case let (.number(x), .number(y)): return x.bitPattern == y.bitPattern
        case let (.string(x), .string(y)): return x == y
        case let (.table(x), .table(y)): return x == y
        default: return false
        }
    }

    /// Hashes what `==` compares: the case and the exact bits.
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .nil: hasher.combine(0 as UInt8)
        case .boolean(let b): hasher.combine(1 as UInt8); hasher.combine(b)
        case .integer(let i): hasher.combine(2 as UInt8); hasher.combine(i)
        case .number(let d): hasher.combine(3 as UInt8); hasher.combine(d.bitPattern)
        case .string(let s):
            // The bytes in one call (Array's own hash feeds them one by one).
            hasher.combine(4 as UInt8)
            hasher.combine(s.count)
            s.withUnsafeBytes { hasher.combine(bytes: $0) }
        case .table(let t): hasher.combine(5 as UInt8); hasher.combine(t)
        }
    }
}
