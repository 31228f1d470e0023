// Literals: a LuaValue reads like the Lua table constructor it stands for.
//
//     let v: LuaValue = ["name": "x", "sizes": [1, 2, 3], "ratio": 0.5, "done": false, "none": nil]
//
// (`"none": nil` makes no entry: a nil value means "no entry" in a table.)

extension LuaValue: ExpressibleByNilLiteral {
    /// `nil` is `.nil`.
    public init(nilLiteral: ()) { self = .nil }
}

extension LuaValue: ExpressibleByBooleanLiteral {
    /// `true` and `false` are `.boolean`.
    public init(booleanLiteral value: Bool) { self = .boolean(value) }
}

extension LuaValue: ExpressibleByIntegerLiteral {
    /// An integer literal is a Lua integer, `.integer`.
    public init(integerLiteral value: Int64) { self = .integer(value) }
}

extension LuaValue: ExpressibleByFloatLiteral {
    /// A float literal is a Lua float, `.number` (`1.0` stays a float).
    public init(floatLiteral value: Double) { self = .number(value) }
}

extension LuaValue: ExpressibleByStringLiteral {
    /// A string literal is a Lua string of its UTF-8 bytes.
    public init(stringLiteral value: String) { self = .string(Array(value.utf8)) }
}

/// An interpolated string literal (`"w=\(width)"`) is a Lua string too.
extension LuaValue: ExpressibleByStringInterpolation {}

extension LuaValue: ExpressibleByArrayLiteral {
    /// `[a, b, c]` is the table `{a, b, c}` (keys 1, 2, 3); a `nil` element
    /// is a hole, as in Lua.
    public init(arrayLiteral elements: LuaValue...) {
        self = .table(LuaTable(array: elements))
    }
}

extension LuaValue: ExpressibleByDictionaryLiteral {
    /// `[k: v, ...]` is the table `{[k] = v, ...}`; a later duplicate key
    /// wins and a nil value makes no entry, as in Lua. `[:]` is an empty
    /// table. Traps on a nil or NaN key.
    public init(dictionaryLiteral elements: (LuaValue, LuaValue)...) {
        self = .table(LuaTable(pairs: elements))
    }
}

extension LuaTable: ExpressibleByArrayLiteral {
    /// `[a, b, c]` is the table `{a, b, c}`.
    public init(arrayLiteral elements: LuaValue...) {
        self.init(array: elements)
    }
}

extension LuaTable: ExpressibleByDictionaryLiteral {
    /// `[k: v, ...]` is the table `{[k] = v, ...}`.
    public init(dictionaryLiteral elements: (LuaValue, LuaValue)...) {
        self.init(pairs: elements)
    }
}

extension LuaValue {
    /// A Lua integer.
    public init(_ value: Int) { self = .integer(Int64(value)) }
    /// A Lua integer.
    public init(_ value: Int64) { self = .integer(value) }
    /// A Lua float.
    public init(_ value: Double) { self = .number(value) }
    /// A Lua boolean.
    public init(_ value: Bool) { self = .boolean(value) }
    /// The Lua string of `value`'s UTF-8 bytes.
    public init(_ value: String) { self = .string(Array(value.utf8)) }
    /// A table.
    public init(_ value: LuaTable) { self = .table(value) }
    /// The table `{values[0], values[1], ...}` (keys from 1).
    public init(_ values: [LuaValue]) { self = .table(LuaTable(array: values)) }
    /// The table with these entries.
    public init(_ entries: [LuaValue: LuaValue]) { self = .table(LuaTable(array: [], hash: entries)) }
    /// The table with these string keys.
    public init(_ entries: [String: LuaValue]) {
        self = .table(LuaTable(pairs: entries.lazy.map { (LuaValue.string($0.key), $0.value) }))
    }
}
