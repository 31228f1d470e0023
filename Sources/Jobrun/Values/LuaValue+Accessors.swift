// Reading a LuaValue without a switch: each accessor is nil when the value
// is not of its kind. Numbers convert as Lua's C API converts them
// (lua_tointegerx, lua_tonumberx): a float with an integer value reads as
// an integer, an integer reads as a float; strings never read as numbers.

extension LuaValue {
    /// Whether this is `.nil`.
    public var isNil: Bool {
        if case .nil = self { return true }
        return false
    }

    /// Lua's truth: everything but `nil` and `false` is true.
    public var isTruthy: Bool {
        switch self {
        case .nil, .boolean(false): return false
        default: return true
        }
    }

    /// The boolean, for `.boolean`.
    public var boolValue: Bool? {
        if case .boolean(let b) = self { return b }
        return nil
    }

    /// The integer, for `.integer` and for a float with an exact 64-bit
    /// integer value (`2.0`, not `2.5`).
    public var int64Value: Int64? {
        switch self {
        case .integer(let i): return i
        case .number(let d): return Int64(exactly: d)
        default: return nil
        }
    }

    /// ``int64Value`` as an `Int`.
    public var intValue: Int? { int64Value.map { Int($0) } }

    /// The number as a `Double`, for `.number` and `.integer` (converted
    /// as Lua converts it; integers past 2^53 round).
    public var doubleValue: Double? {
        switch self {
        case .number(let d): return d
        case .integer(let i): return Double(i)
        default: return nil
        }
    }

    /// The bytes of a string.
    public var bytesValue: [UInt8]? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The string, when its bytes are valid UTF-8 (nil for other bytes:
    /// nothing is replaced or lost silently; see ``bytesValue``).
    public var stringValue: String? {
        guard case .string(let s) = self else { return nil }
        return String(validating: s, as: UTF8.self)
    }

    /// The table.
    public var tableValue: LuaTable? {
        if case .table(let t) = self { return t }
        return nil
    }

    /// The elements of a table whose keys are exactly `1...n` (a sequence;
    /// `[]` for an empty table), in order.
    public var arrayValue: [LuaValue]? {
        guard case .table(let t) = self, t.isSequence else { return nil }
        return t.array
    }

    /// Every entry of a table.
    public var dictionaryValue: [LuaValue: LuaValue]? {
        guard case .table(let t) = self else { return nil }
        var d = t.hash
        for (i, v) in t.array.enumerated() { d[.integer(Int64(i) + 1)] = v }
        return d
    }

    /// What Lua's `type` says: `"nil"`, `"boolean"`, `"number"`,
    /// `"string"` or `"table"`.
    public var typeName: String {
        switch self {
        case .nil: return "nil"
        case .boolean: return "boolean"
        case .integer, .number: return "number"
        case .string: return "string"
        case .table: return "table"
        }
    }

    // MARK: - Subscripts

    /// The entry `self[key]` of a table; `.nil` for a missing key and when
    /// this is not a table (so lookups chain: `v["a"]["b"][1]`).
    /// Setting requires a table (it traps otherwise, as indexing a non-table
    /// raises in Lua); setting `.nil` removes the entry.
    public subscript(key: LuaValue) -> LuaValue {
        get {
            guard case .table(let t) = self else { return .nil }
            return t[key]
        }
        set {
            guard case .table(var t) = self else {
                preconditionFailure("LuaValue: cannot set a field of a \(typeName) value (only of a table)")
            }
            self = .nil     // t is the only reference: the assignment below does not copy
            t[key] = newValue
            self = .table(t)
        }
    }

    /// The entry under the string key `key` (`v.key` in Lua).
    public subscript(key: String) -> LuaValue {
        get { self[.string(key)] }
        set { self[.string(key)] = newValue }
    }

    /// The entry under the integer key `index`: Lua counts from 1, so
    /// `v[1]` is the first element.
    public subscript(index: Int) -> LuaValue {
        get { self[.integer(Int64(index))] }
        set { self[.integer(Int64(index))] = newValue }
    }
}

extension LuaTable {
    /// The entry under the string key `key`.
    public subscript(key: String) -> LuaValue {
        get { self[.string(key)] }
        set { self[.string(key)] = newValue }
    }

    /// The entry under the integer key `index` (from 1, as in Lua).
    public subscript(index: Int) -> LuaValue {
        get { self[.integer(Int64(index))] }
        set { self[.integer(Int64(index))] = newValue }
    }
}
