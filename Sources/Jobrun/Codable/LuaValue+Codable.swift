// LuaValue is Codable, so a struct may carry a free-form Lua value in one
// of its fields (`var options: LuaValue`). LuaValueEncoder and
// LuaValueDecoder pass it through unchanged; other coders (JSON, property
// lists) get the closest form they have.

extension LuaValue: Codable {
    /// Through ``LuaValueEncoder``: the value itself. Through another
    /// encoder: nil, boolean, integer (`Int64`), float (`Double`), string (a
    /// `String` when the bytes are UTF-8, else a list of byte values), a
    /// sequence as a list, a table whose keys are all strings as a keyed
    /// container. Any other table is an `EncodingError.invalidValue`: those
    /// formats have no keys but strings.
    public func encode(to encoder: any Encoder) throws {
        if let lua = encoder as? LuaEncoderImpl {
            var c = lua.singleValueContainer()
            try c.encode(self)      // LuaValueEncoder's special case: the value as it is
            return
        }
        switch self {
        case .nil:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .boolean(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .integer(let i):
            var c = encoder.singleValueContainer()
            try c.encode(i)
        case .number(let d):
            var c = encoder.singleValueContainer()
            try c.encode(d)
        case .string(let bytes):
            var c = encoder.singleValueContainer()
            if let s = String(validating: bytes, as: UTF8.self) { try c.encode(s) } else { try c.encode(bytes) }
        case .table(let t):
            if t.isSequence {
                var c = encoder.unkeyedContainer()
                for v in t.array { try c.encode(v) }
                return
            }
            var c = encoder.container(keyedBy: LuaCodingKey.self)
            for (k, v) in t {
                guard case .string(let b) = k, let key = String(validating: b, as: UTF8.self) else {
                    throw EncodingError.invalidValue(self, .init(codingPath: encoder.codingPath, debugDescription:
                        "a table with the key \(k) has no form in this encoder: only string keys can be encoded outside LuaValueEncoder"))
                }
                try c.encode(v, forKey: LuaCodingKey(stringValue: key))
            }
        }
    }

    /// Through ``LuaValueDecoder``: the value itself. Through another
    /// decoder: the first of nil, boolean, integer, float, string, list of
    /// values, string-keyed table that the input reads as.
    public init(from decoder: any Decoder) throws {
        if let lua = decoder as? LuaDecoderImpl {
            self = lua.value
            return
        }
        if let c = try? decoder.singleValueContainer() {
            if c.decodeNil() { self = .nil; return }
            if let b = try? c.decode(Bool.self) { self = .boolean(b); return }
            if let i = try? c.decode(Int64.self) { self = .integer(i); return }
            if let d = try? c.decode(Double.self) { self = .number(d); return }
            if let s = try? c.decode(String.self) { self = .string(s); return }
        }
        if var c = try? decoder.unkeyedContainer() {
            var elements: [LuaValue] = []
            while !c.isAtEnd { elements.append(try c.decode(LuaValue.self)) }
            self = .table(LuaTable(array: elements))
            return
        }
        let c = try decoder.container(keyedBy: LuaCodingKey.self)
        var t = LuaTable()
        for key in c.allKeys { t[.string(key.stringValue)] = try c.decode(LuaValue.self, forKey: key) }
        self = .table(t)
    }
}
