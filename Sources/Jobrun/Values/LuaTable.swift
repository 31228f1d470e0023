/// A Lua table as a value: an array part and a hash part, in one canonical
/// form, so that two tables with the same entries are equal however they
/// were built.
///
/// - ``array`` holds `t[1], t[2], ..., t[n]`: the longest run of integer
///   keys `1, 2, ..., n` whose values are not nil.
/// - ``hash`` holds every other entry: keys past a hole (`{1, nil, 3}` has
///   `array == [1]` and `hash == [3: 3]`), `0`, negative integers, floats,
///   strings, booleans and tables.
///
/// The rules Lua applies to a table apply here: a nil value means "no
/// entry" (assigning nil removes the key), and a float key with an integer
/// value is that integer (`t[2.0]` is `t[2]`, `t[-0.0]` is `t[0]`). A nil or
/// NaN key is a programming error, as it is in Lua (`t[nil] = v` raises
/// there; it traps here). Reading one gives nil.
///
/// Table keys compare by content (Lua compares tables by identity): two
/// distinct Lua tables with equal contents used as keys of one table become
/// one key when that table is turned into a `LuaTable`.
///
/// Iterating gives the array part in order, as integer keys, then the hash
/// part in no particular order.
public struct LuaTable: Sendable, Hashable {
    /// `t[1] ... t[n]`, none of them nil.
    public private(set) var array: [LuaValue]
    /// Every entry not in ``array``; no key is nil, NaN, an integer-valued
    /// float, or an integer from 1 to `array.count + 1`, and no value is nil.
    public private(set) var hash: [LuaValue: LuaValue]

    /// An empty table.
    public init() {
        array = []
        hash = [:]
    }

    /// The table `{array[0], array[1], ...}` plus the entries of `hash`, as
    /// Lua's constructor `{a, b, c, [k] = v}` builds it: a nil in `array` is
    /// a hole (the elements after it are kept under their keys), and an
    /// entry of `hash` overrides a position of `array` with the same key.
    /// Traps on a nil or NaN key.
    public init(array: [LuaValue], hash: [LuaValue: LuaValue] = [:]) {
        self.init(decodedArray: array, pairs: hash.map { ($0.key, $0.value) })
    }

    /// The table holding `pairs`; a later pair with the same key wins (as in
    /// Lua's `{k = 1, k = 2}`). Traps on a nil or NaN key.
    public init(pairs: some Sequence<(LuaValue, LuaValue)>) {
        self.init(decodedArray: [], pairs: Array(pairs))
    }

    /// `t[1...]` from `array` (nils are holes), then each pair stored in
    /// order (a nil value removes), as Lua's `lua_rawseti` and `lua_rawset`
    /// build a table (the decoder's case). In time linear in the entries
    /// whatever their order: storing them one by one through the subscript
    /// could move the array part back and forth for each pair (`[1] = nil,
    /// [1] = 1, ...`). Traps on a nil or NaN key.
    init(decodedArray: [LuaValue], pairs: [(LuaValue, LuaValue)]) {
        let n = Int64(decodedArray.count)
        let simple = !decodedArray.contains(.nil) && pairs.allSatisfy { k, v in
            if v == .nil { return false }
            switch Self.normalizedKey(k) {
            case .integer(let i): return i < 1 || i > n
            default: return true
            }
        }
        if simple {
            array = decodedArray
            hash = [:]
            hash.reserveCapacity(pairs.count)
            for (k, v) in pairs { hash[Self.normalizedKey(k)] = v }
            // Keys n+1, n+2, ... among the pairs join the array part.
            while !hash.isEmpty, let next = hash.removeValue(forKey: .integer(Int64(array.count) + 1)) { array.append(next) }
            return
        }
        var all: [LuaValue: LuaValue] = [:]
        all.reserveCapacity(decodedArray.count + pairs.count)
        for (i, v) in decodedArray.enumerated() where v != .nil { all[.integer(Int64(i) + 1)] = v }
        for (k, v) in pairs {
            if v == .nil { all.removeValue(forKey: Self.normalizedKey(k)) } else { all[Self.normalizedKey(k)] = v }
        }
        array = []
        while let next = all.removeValue(forKey: .integer(Int64(array.count) + 1)) { array.append(next) }
        hash = all
    }

    /// The number of entries (non-nil values).
    public var count: Int { array.count + hash.count }

    /// Whether the table has no entry.
    public var isEmpty: Bool { array.isEmpty && hash.isEmpty }

    /// Whether the keys are exactly `1...n` (a Lua sequence; an empty table
    /// is one).
    public var isSequence: Bool { hash.isEmpty }

    /// The value under `key`; `.nil` when there is none. Setting `.nil`
    /// removes the entry. Setting under a nil or NaN key traps.
    public subscript(key: LuaValue) -> LuaValue {
        get {
            switch key {
            case .integer(let i):
                if i >= 1 && i <= Int64(array.count) { return array[Int(i - 1)] }
                return hash[key] ?? .nil
            case .number(let d):
                if let i = Int64(exactly: d) { return self[.integer(i)] }
                return d.isNaN ? .nil : hash[key] ?? .nil
            case .nil:
                return .nil
            default:
                return hash[key] ?? .nil
            }
        }
        set {
            set(Self.normalizedKey(key), newValue)
        }
    }

    /// Appends `value` after the last element of ``array`` (Lua's
    /// `t[#t + 1] = value` on a sequence); appending nil does nothing.
    public mutating func append(_ value: LuaValue) {
        set(.integer(Int64(array.count) + 1), value)
    }

    /// The key Lua would store `key` under; traps on nil and NaN.
    static func normalizedKey(_ key: LuaValue) -> LuaValue {
        switch key {
        case .nil:
            preconditionFailure("LuaTable: a table key cannot be nil")
        case .number(let d):
            precondition(!d.isNaN, "LuaTable: a table key cannot be NaN")
            if let i = Int64(exactly: d) { return .integer(i) }
            return key
        default:
            return key
        }
    }

    /// Stores under a normalised key, keeping the canonical form.
    private mutating func set(_ key: LuaValue, _ value: LuaValue) {
        if case .integer(let i) = key, i >= 1, i <= Int64(array.count) + 1 {
            let at = Int(i - 1)
            if at < array.count {
                if value != .nil {
                    array[at] = value
                } else {
                    // A hole: what follows it leaves the array part.
                    for j in (at + 1)..<array.count { hash[.integer(Int64(j) + 1)] = array[j] }
                    array.removeSubrange(at...)
                }
            } else if value != .nil {
                array.append(value)
                // Keys n+1, n+2, ... waiting in the hash part join the array.
                while !hash.isEmpty, let next = hash.removeValue(forKey: .integer(Int64(array.count) + 1)) {
                    array.append(next)
                }
            }
            return
        }
        if value == .nil {
            hash.removeValue(forKey: key)
        } else {
            hash[key] = value
        }
    }
}

extension LuaTable: Sequence {
    /// Iterates over the entries: the array part in order (keys 1, 2, ...),
    /// then the hash part in no particular order.
    public struct Iterator: IteratorProtocol {
        private let array: [LuaValue]
        private var index = 0
        private var rest: Dictionary<LuaValue, LuaValue>.Iterator

        init(_ t: LuaTable) {
            array = t.array
            rest = t.hash.makeIterator()
        }

        /// The next entry, or nil after the last.
        public mutating func next() -> (key: LuaValue, value: LuaValue)? {
            if index < array.count {
                index += 1
                return (.integer(Int64(index)), array[index - 1])
            }
            return rest.next()
        }
    }

    /// An iterator over the entries (array part first).
    public func makeIterator() -> Iterator { Iterator(self) }

    /// The number of entries.
    public var underestimatedCount: Int { count }
}
