#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns a ``LuaValue`` into a `Decodable` value, so a host reads what a
/// plug-in returned as its own types:
///
/// ```swift
/// struct Report: Codable { var count: Int; var mean: Double; var tags: [String] }
/// let report = try LuaValueDecoder().decode(Report.self, from: result)
/// ```
///
/// The mapping is ``LuaValueEncoder``'s, read back, with the conversions
/// Lua itself makes between numbers (`lua_tointegerx`, `lua_tonumberx`):
///
/// - An integer type reads a Lua integer, or a float with an exact integer
///   value (`2.0` reads as `2`, `2.5` is a type mismatch); a value that
///   does not fit the type (`300` as `Int8`, `-1` as `UInt`) is an error,
///   never truncated.
/// - `Double` and `Float` read floats and integers; a finite float too
///   large for `Float` is an error.
/// - `String` reads a Lua string that is valid UTF-8; `[UInt8]` and `Data`
///   read any string's bytes (or a list of byte values).
/// - `Bool` reads only `true` and `false` (Lua's truthiness is not used).
/// - A keyed container reads a table's string keys; a missing key and a
///   nil value are the same (an `Optional` field reads `nil`). A `[Int: T]`
///   reads a table's integer keys.
/// - An unkeyed container reads a list: a table whose keys are integers
///   `1...n`. It may have holes (`{1, nil, 3}`, which is how an array of
///   optionals with a nil in it arrives), as long as `n` is at most twice
///   the number of entries, or 1,024 past it: a table `{[2^40] = 1}` is
///   not a list of a trillion nils.
///
/// Errors are `DecodingError`s whose coding path leads to the value:
/// `typeMismatch` (a string where a number is expected), `valueNotFound`
/// (nil where a value is required), `keyNotFound`, and `dataCorrupted` (a
/// number that does not fit, a string that is not UTF-8).
public struct LuaValueDecoder: Sendable {
    /// Handed to every `init(from:)` as `Decoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    /// A decoder with empty `userInfo`.
    public init() {}

    /// The `T` that `value` stands for.
    public func decode<T: Decodable>(_ type: T.Type, from value: LuaValue) throws -> T {
        try LuaDecoderImpl(value: value, codingPath: [], userInfo: userInfo.mapValues { $0 as Any }).unbox(value, as: T.self, at: [])
    }
}

final class LuaDecoderImpl: Decoder {
    let value: LuaValue
    let codingPath: [any CodingKey]
    let userInfo: [CodingUserInfoKey: Any]

    init(value: LuaValue, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: Any]) {
        self.value = value
        self.codingPath = codingPath
        self.userInfo = userInfo
    }

    func child(_ value: LuaValue, _ path: [any CodingKey]) -> LuaDecoderImpl {
        LuaDecoderImpl(value: value, codingPath: path, userInfo: userInfo)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let t = try table(value, as: [String: LuaValue].self, at: codingPath)
        return KeyedDecodingContainer(LuaKeyedDecodingContainer<Key>(decoder: self, table: t))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let t = try table(value, as: [LuaValue].self, at: codingPath)
        return LuaUnkeyedDecodingContainer(decoder: self, elements: try list(t))
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        LuaSingleValueDecodingContainer(decoder: self)
    }

    // MARK: - Conversions

    func table(_ v: LuaValue, as type: Any.Type, at path: [any CodingKey]) throws -> LuaTable {
        if case .table(let t) = v { return t }
        if case .nil = v {
            throw DecodingError.valueNotFound(type, .init(codingPath: path, debugDescription: "expected a table, found nil"))
        }
        throw mismatch(type, "a table", v, path)
    }

    /// The elements `t[1] ... t[n]` of a list (see the type's documentation).
    func list(_ t: LuaTable) throws -> [LuaValue] {
        if t.hash.isEmpty { return t.array }
        var last: Int64 = 0
        for k in t.hash.keys {
            guard case .integer(let i) = k, i >= 1 else {
                throw mismatch([LuaValue].self, "a list (keys 1...n)", .table(t), codingPath, detail: "a table with the key \(k)")
            }
            last = max(last, i)
        }
        guard last <= max(2 * Int64(t.count), Int64(t.count) + 1024) else {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription:
                "expected a list, found a table with \(t.count) entries and the key \(last): too sparse to read as a list"))
        }
        var elements = t.array
        elements.reserveCapacity(Int(last))
        for i in (Int64(t.array.count) + 1)...last { elements.append(t[.integer(i)]) }
        return elements
    }

    func mismatch(_ type: Any.Type, _ expected: String, _ v: LuaValue, _ path: [any CodingKey], detail: String? = nil) -> DecodingError {
        .typeMismatch(type, .init(codingPath: path, debugDescription: "expected \(expected), found \(detail ?? Self.describe(v))"))
    }

    /// "an integer (3)", "a string ("abc")", "a table": short, for error messages.
    static func describe(_ v: LuaValue) -> String {
        switch v {
        case .nil: return "nil"
        case .boolean(let b): return "a boolean (\(b))"
        case .integer(let i): return "an integer (\(i))"
        case .number(let d): return "a float (\(LuaValue.floatText(d)))"
        case .string:
            let text = v.description
            return "a string (" + (text.count > 40 ? String(text.prefix(36)) + "...\"" : text) + ")"
        case .table: return "a table"
        }
    }

    private func notNil(_ v: LuaValue, _ type: Any.Type, _ path: @autoclosure () -> [any CodingKey]) throws {
        if case .nil = v {
            throw DecodingError.valueNotFound(type, .init(codingPath: path(), debugDescription: "expected \(type), found nil"))
        }
    }

    func bool(_ v: LuaValue, at path: @autoclosure () -> [any CodingKey]) throws -> Bool {
        if case .boolean(let b) = v { return b }
        try notNil(v, Bool.self, path())
        throw mismatch(Bool.self, "a boolean", v, path())
    }

    func string(_ v: LuaValue, at path: @autoclosure () -> [any CodingKey]) throws -> String {
        guard case .string(let bytes) = v else {
            try notNil(v, String.self, path())
            throw mismatch(String.self, "a string", v, path())
        }
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw DecodingError.dataCorrupted(.init(codingPath: path(), debugDescription:
                "a string that is not valid UTF-8 (\(Self.describe(v))); read it as [UInt8] or Data"))
        }
        return s
    }

    func integer<T: FixedWidthInteger>(_ v: LuaValue, as type: T.Type, at path: @autoclosure () -> [any CodingKey]) throws -> T {
        switch v {
        case .integer(let i):
            if let x = T(exactly: i) { return x }
            throw DecodingError.dataCorrupted(.init(codingPath: path(), debugDescription: "\(i) does not fit in \(T.self)"))
        case .number(let d):
            if let x = T(exactly: d) { return x }
            if d.isFinite && d.rounded(.towardZero) == d {
                throw DecodingError.dataCorrupted(.init(codingPath: path(), debugDescription: "\(LuaValue.floatText(d)) does not fit in \(T.self)"))
            }
            throw mismatch(T.self, "an integer", v, path())
        default:
            try notNil(v, T.self, path())
            throw mismatch(T.self, "an integer", v, path())
        }
    }

    func double(_ v: LuaValue, at path: @autoclosure () -> [any CodingKey]) throws -> Double {
        switch v {
        case .number(let d): return d
        case .integer(let i): return Double(i)
        default:
            try notNil(v, Double.self, path())
            throw mismatch(Double.self, "a number", v, path())
        }
    }

    func float(_ v: LuaValue, at path: @autoclosure () -> [any CodingKey]) throws -> Float {
        if case .number(let d) = v, d.isFinite, abs(d) > Double(Float.greatestFiniteMagnitude) {
            throw DecodingError.dataCorrupted(.init(codingPath: path(), debugDescription: "\(LuaValue.floatText(d)) does not fit in Float"))
        }
        do { return Float(try double(v, at: path())) } catch DecodingError.typeMismatch(_, let context) {
            throw DecodingError.typeMismatch(Float.self, context)
        }
    }

    /// `v` as a `T`: the types read directly, then `T.init(from:)`.
    func unbox<T: Decodable>(_ v: LuaValue, as type: T.Type, at lazyPath: @autoclosure () -> [any CodingKey]) throws -> T {
        if T.self == LuaValue.self { return v as! T }
        if T.self == LuaTable.self { return try table(v, as: LuaTable.self, at: lazyPath()) as! T }
        if T.self == [UInt8].self, case .string(let b) = v { return b as! T }
        if T.self == Data.self, case .string(let b) = v { return Data(b) as! T }
        let path = lazyPath()
        if path.count >= LuaWire.maxDepth * 4 {
            // LuaValues from the wire are at most maxDepth deep; only a
            // built one can go further, and recursion must end somewhere.
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "nested too deeply"))
        }
        return try T(from: path.count == codingPath.count ? self : child(v, path))
    }
}

// MARK: - Keyed

struct LuaKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: LuaDecoderImpl
    let table: LuaTable
    var codingPath: [any CodingKey] { decoder.codingPath }

    /// String keys, then integer keys (for `[Int: T]` and integer coding keys).
    var allKeys: [Key] {
        table.compactMap { entry -> Key? in
            switch entry.key {
            case .string(let b): return String(validating: b, as: UTF8.self).flatMap { Key(stringValue: $0) }
            case .integer(let i): return Int(exactly: i).flatMap { Key(intValue: $0) } ?? Key(stringValue: String(i))
            default: return nil
            }
        }
    }

    /// The value under the key's string, else under its integer value; nil if neither.
    private func lookup(_ key: Key) -> LuaValue? {
        let v = table[.string(Array(key.stringValue.utf8))]
        if v != .nil { return v }
        if let i = key.intValue {
            let w = table[.integer(Int64(i))]
            if w != .nil { return w }
        }
        return nil
    }

    private func value(_ key: Key) throws -> LuaValue {
        guard let v = lookup(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no entry \"\(key.stringValue)\" in the table"))
        }
        return v
    }

    func contains(_ key: Key) -> Bool { lookup(key) != nil }
    /// A missing key reads as nil: a Lua table holds no nil.
    func decodeNil(forKey key: Key) throws -> Bool { lookup(key) == nil }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decoder.bool(value(key), at: codingPath + [key]) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decoder.string(value(key), at: codingPath + [key]) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decoder.double(value(key), at: codingPath + [key]) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decoder.float(value(key), at: codingPath + [key]) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decoder.integer(value(key), as: type, at: codingPath + [key]) }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        guard let v = lookup(key) else {
            // An optional-like type may accept nil (LuaValue does); others say which key is missing.
            if T.self == LuaValue.self { return LuaValue.nil as! T }
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no entry \"\(key.stringValue)\" in the table"))
        }
        return try decoder.unbox(v, as: T.self, at: codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder.child(value(key), codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder.child(value(key), codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        decoder.child(table["super"], codingPath + [LuaCodingKey.super])
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder.child(lookup(key) ?? .nil, codingPath + [key])
    }
}

// MARK: - Unkeyed

struct LuaUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let decoder: LuaDecoderImpl
    let elements: [LuaValue]
    var currentIndex = 0
    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    init(decoder: LuaDecoderImpl, elements: [LuaValue]) {
        self.decoder = decoder
        self.elements = elements
    }

    private var path: [any CodingKey] { codingPath + [LuaCodingKey(index: currentIndex)] }

    /// The next element, and the cursor moved past it when `read` succeeds.
    private mutating func next<T>(_ type: Any.Type, _ read: (LuaValue, () -> [any CodingKey], LuaDecoderImpl) throws -> T) throws -> T {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(type, .init(codingPath: path, debugDescription: "no element \(currentIndex + 1): the list has \(elements.count)"))
        }
        let v = try read(elements[currentIndex], { path }, decoder)
        currentIndex += 1
        return v
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any?.self, .init(codingPath: path, debugDescription: "no element \(currentIndex + 1): the list has \(elements.count)"))
        }
        if elements[currentIndex] == .nil { currentIndex += 1; return true }
        return false
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type) { try $2.bool($0, at: $1()) } }
    mutating func decode(_ type: String.Type) throws -> String { try next(type) { try $2.string($0, at: $1()) } }
    mutating func decode(_ type: Double.Type) throws -> Double { try next(type) { try $2.double($0, at: $1()) } }
    mutating func decode(_ type: Float.Type) throws -> Float { try next(type) { try $2.float($0, at: $1()) } }
    mutating func decode(_ type: Int.Type) throws -> Int { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(type) { try $2.integer($0, as: type, at: $1()) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(type) { try $2.integer($0, as: type, at: $1()) } }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try next(type) { try $2.unbox($0, as: T.self, at: $1()) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next(type) { try $2.child($0, $1()).container(keyedBy: type) }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next([LuaValue].self) { try $2.child($0, $1()).unkeyedContainer() }
    }

    mutating func superDecoder() throws -> any Decoder {
        try next(LuaValue.self) { $2.child($0, $1()) }
    }
}

// MARK: - Single value

struct LuaSingleValueDecodingContainer: SingleValueDecodingContainer {
    let decoder: LuaDecoderImpl
    var codingPath: [any CodingKey] { decoder.codingPath }
    private var v: LuaValue { decoder.value }

    func decodeNil() -> Bool { v == .nil }
    func decode(_ type: Bool.Type) throws -> Bool { try decoder.bool(v, at: codingPath) }
    func decode(_ type: String.Type) throws -> String { try decoder.string(v, at: codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try decoder.double(v, at: codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try decoder.float(v, at: codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.integer(v, as: type, at: codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.integer(v, as: type, at: codingPath) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // The wrapped value is read through this decoder (same path, same value).
        try decoder.unbox(v, as: T.self, at: codingPath)
    }
}
