#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns an `Encodable` value into a ``LuaValue``, so a host passes its own
/// structs to a plug-in:
///
/// ```swift
/// struct Resize: Codable { var path: String; var width: Int; var keepRatio = true }
/// let v = try LuaValueEncoder().encode(Resize(path: "a.png", width: 128))
/// // {keepRatio = true, path = "a.png", width = 128}
/// ```
///
/// How Swift maps to Lua:
///
/// | Swift | Lua |
/// | --- | --- |
/// | struct, class, `[String: T]` (keyed) | table with string keys (`CodingKey.stringValue`) |
/// | `[Int: T]` | table with integer keys |
/// | array, set (unkeyed) | table `{v1, v2, ...}`, keys from 1 |
/// | `Int`, `Int8`...`Int64`, `UInt`...`UInt64` | integer (a `UInt64` past `Int64.max` is an error) |
/// | `Double`, `Float` | float (even when the value is whole: `2.0` stays `2.0`) |
/// | `Bool`, `String` | boolean, string (UTF-8 bytes) |
/// | `[UInt8]`, `Data` | string (the bytes) |
/// | `nil` (an optional) | no entry in a keyed container; a hole in an unkeyed one |
/// | ``LuaValue``, ``LuaTable`` | themselves |
///
/// Other types encode as their `Codable` conformance says (`Date` as its
/// `Double` seconds since 2001, `URL` as its string). Enums with associated
/// values are keyed tables, as Swift synthesises them. A Lua table cannot
/// hold nil, so an unkeyed container's trailing nils are lost: `[1, nil]`
/// encodes as `{1}`.
///
/// Errors are `EncodingError.invalidValue` with the coding path: an
/// integer that does not fit in 64 signed bits, a value nested more than
/// 200 levels deep (the most a Lua value may have to cross a process; this
/// also stops a cyclic class graph), a top-level value that encoded nothing.
public struct LuaValueEncoder: Sendable {
    /// Handed to every `encode(to:)` as `Encoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    /// An encoder with empty `userInfo`.
    public init() {}

    /// The LuaValue that `value` encodes to.
    public func encode<T: Encodable>(_ value: T) throws -> LuaValue {
        let encoding = LuaEncoding(userInfo: userInfo)
        if let v = try encoding.special(value, at: []) { return v }
        let node = EncodedNode()
        try value.encode(to: LuaEncoderImpl(node: node, codingPath: [], encoding: encoding))
        if case .empty = node.kind {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "Top-level \(T.self) did not encode any values."))
        }
        return node.resolve()
    }
}

// MARK: - The tree being built

/// What one `Encoder` wrote: a value, or a container whose children may
/// still be written (containers are handed out and filled later, so they
/// are reference types until `resolve`).
final class EncodedNode {
    enum Kind { case empty, value, keyed, unkeyed }
    var kind = Kind.empty
    var value = LuaValue.nil
    /// Keyed entries in the order written; a key written twice: the last wins.
    var entries: [(key: LuaValue, slot: Slot)] = []
    var elements: [Slot] = []

    /// A child: a finished value (scalars, no node allocated) or a node.
    enum Slot {
        case value(LuaValue)
        case node(EncodedNode)

        func resolve() -> LuaValue {
            switch self {
            case .value(let v): return v
            case .node(let n): return n.resolve()
            }
        }
    }

    func resolve() -> LuaValue {
        switch kind {
        case .empty: return .table(LuaTable())         // a nested value that wrote nothing: {}
        case .value: return value
        case .keyed: return .table(LuaTable(pairs: entries.lazy.map { ($0.key, $0.slot.resolve()) }))
        case .unkeyed: return .table(LuaTable(array: elements.map { $0.resolve() }))
        }
    }
}

/// The settings of one `encode` call, shared by every encoder it makes.
struct LuaEncoding {
    let userInfo: [CodingUserInfoKey: Any]

    init(userInfo: [CodingUserInfoKey: any Sendable]) {
        self.userInfo = userInfo.mapValues { $0 as Any }
    }

    /// The value of the types encoded as themselves or as bytes; nil for the rest.
    func special<T: Encodable>(_ value: T, at lazyPath: @autoclosure () -> [any CodingKey]) throws -> LuaValue? {
        // Metadata comparisons first: most values are none of these, and
        // telling that costs no dynamic cast.
        if T.self == LuaValue.self { return value as? LuaValue }
        if T.self == LuaTable.self { return (value as? LuaTable).map(LuaValue.table) }
        if T.self == [UInt8].self { return (value as? [UInt8]).map(LuaValue.string) }
        if T.self == Data.self { return (value as? Data).map { .string(Array($0)) } }
        guard T.self is any IntKeyedDictionary.Type, let d = value as? any IntKeyedDictionary else { return nil }
        let path = lazyPath()
        try checkDepth(path, value)
        var t = LuaTable()
        for (k, v) in d.encodableEntries {
            t[.integer(Int64(k))] = try slot(v, parent: path, key: LuaCodingKey(intValue: k)).resolve()
        }
        return .table(t)
    }

    /// `value` encoded under `key` of the container at `parent` (the path
    /// is made only if something asks for it: most values never do).
    func slot<T: Encodable>(_ value: T, parent: [any CodingKey], key: any CodingKey) throws -> EncodedNode.Slot {
        if let v = try special(value, at: parent + [key]) { return .value(v) }
        if parent.count + 1 >= LuaWire.maxDepth { try checkDepth(parent + [key], value) }
        let node = EncodedNode()
        try value.encode(to: LuaEncoderImpl(node: node, parent: parent, key: key, encoding: self))
        if node.kind == .value { return .value(node.value) }
        return .node(node)
    }

    func checkDepth(_ path: [any CodingKey], _ value: Any) throws {
        if path.count >= LuaWire.maxDepth {
            throw EncodingError.invalidValue(value, .init(codingPath: path, debugDescription:
                "nested too deeply: more than \(LuaWire.maxDepth) levels (a Lua value sent between processes has at most \(LuaWire.maxDepth); a cycle of references never ends)"))
        }
    }

    func integer<T: BinaryInteger>(_ v: T, at path: [any CodingKey]) throws -> LuaValue {
        guard let i = Int64(exactly: v) else {
            throw EncodingError.invalidValue(v, .init(codingPath: path, debugDescription: "\(T.self) \(v) does not fit in a Lua integer (64-bit signed)"))
        }
        return .integer(i)
    }
}

/// `[Int: V]`, told apart so its keys become Lua integers (Swift's own
/// Dictionary coding would give them as keyed-container keys).
protocol IntKeyedDictionary {
    var encodableEntries: [(Int, any Encodable)] { get }
}

extension Dictionary: IntKeyedDictionary where Key == Int, Value: Encodable {
    var encodableEntries: [(Int, any Encodable)] { map { ($0.key, $0.value as any Encodable) } }
}

/// A coding key made here: array positions (`Index 3`), `super`, integer dictionary keys.
struct LuaCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) { self.stringValue = String(intValue); self.intValue = intValue }
    init(index: Int) { self.stringValue = "Index \(index)"; self.intValue = index }

    static let `super` = LuaCodingKey(stringValue: "super")
}

// MARK: - Encoder

final class LuaEncoderImpl: Encoder {
    let node: EncodedNode
    let encoding: LuaEncoding
    private let parent: [any CodingKey]
    private let key: (any CodingKey)?
    var userInfo: [CodingUserInfoKey: Any] { encoding.userInfo }
    var codingPath: [any CodingKey] { key.map { parent + [$0] } ?? parent }

    init(node: EncodedNode, codingPath: [any CodingKey], encoding: LuaEncoding) {
        self.node = node
        self.parent = codingPath
        self.key = nil
        self.encoding = encoding
    }

    init(node: EncodedNode, parent: [any CodingKey], key: any CodingKey, encoding: LuaEncoding) {
        self.node = node
        self.parent = parent
        self.key = key
        self.encoding = encoding
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        switch node.kind {
        case .empty: node.kind = .keyed
        case .keyed: break      // asked again (a subclass and its superclass share the encoder)
        default: preconditionFailure("LuaValueEncoder: a keyed container asked for where a \(node.kind) was already encoded at \(codingPath.map(\.stringValue))")
        }
        return KeyedEncodingContainer(LuaKeyedEncodingContainer<Key>(node: node, codingPath: codingPath, encoding: encoding))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        switch node.kind {
        case .empty: node.kind = .unkeyed
        case .unkeyed: break
        default: preconditionFailure("LuaValueEncoder: an unkeyed container asked for where a \(node.kind) was already encoded at \(codingPath.map(\.stringValue))")
        }
        return LuaUnkeyedEncodingContainer(node: node, codingPath: codingPath, encoding: encoding)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        LuaSingleValueEncodingContainer(encoder: self)
    }
}

// MARK: - Keyed

struct LuaKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: EncodedNode
    let codingPath: [any CodingKey]
    let encoding: LuaEncoding

    private func luaKey(_ key: Key) -> LuaValue { .string(Array(key.stringValue.utf8)) }
    private func set(_ v: LuaValue, _ key: Key) { node.entries.append((luaKey(key), .value(v))) }

    /// A nil value is no entry (a Lua table cannot hold nil).
    mutating func encodeNil(forKey key: Key) throws { set(.nil, key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { set(.boolean(value), key) }
    mutating func encode(_ value: String, forKey key: Key) throws { set(.string(Array(value.utf8)), key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { set(.number(value), key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { set(.number(Double(value)), key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { set(.integer(value), key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { set(try encoding.integer(value, at: codingPath + [key]), key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { set(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { set(try encoding.integer(value, at: codingPath + [key]), key) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        node.entries.append((luaKey(key), try encoding.slot(value, parent: codingPath, key: key)))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = EncodedNode()
        child.kind = .keyed
        node.entries.append((luaKey(key), .node(child)))
        return KeyedEncodingContainer(LuaKeyedEncodingContainer<NestedKey>(node: child, codingPath: codingPath + [key], encoding: encoding))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = EncodedNode()
        child.kind = .unkeyed
        node.entries.append((luaKey(key), .node(child)))
        return LuaUnkeyedEncodingContainer(node: child, codingPath: codingPath + [key], encoding: encoding)
    }

    mutating func superEncoder() -> any Encoder {
        let child = EncodedNode()
        node.entries.append((.string(Array("super".utf8)), .node(child)))
        return LuaEncoderImpl(node: child, codingPath: codingPath + [LuaCodingKey.super], encoding: encoding)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = EncodedNode()
        node.entries.append((luaKey(key), .node(child)))
        return LuaEncoderImpl(node: child, codingPath: codingPath + [key], encoding: encoding)
    }
}

// MARK: - Unkeyed

struct LuaUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let node: EncodedNode
    let codingPath: [any CodingKey]
    let encoding: LuaEncoding

    var count: Int { node.elements.count }
    private var nextPath: [any CodingKey] { codingPath + [LuaCodingKey(index: count)] }
    private func append(_ v: LuaValue) { node.elements.append(.value(v)) }

    /// A nil element is a hole (`{1, nil, 3}`); trailing ones are lost.
    mutating func encodeNil() throws { append(.nil) }
    mutating func encode(_ value: Bool) throws { append(.boolean(value)) }
    mutating func encode(_ value: String) throws { append(.string(Array(value.utf8))) }
    mutating func encode(_ value: Double) throws { append(.number(value)) }
    mutating func encode(_ value: Float) throws { append(.number(Double(value))) }
    mutating func encode(_ value: Int) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: Int8) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: Int16) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: Int32) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: Int64) throws { append(.integer(value)) }
    mutating func encode(_ value: UInt) throws { append(try encoding.integer(value, at: nextPath)) }
    mutating func encode(_ value: UInt8) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: UInt16) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: UInt32) throws { append(.integer(Int64(value))) }
    mutating func encode(_ value: UInt64) throws { append(try encoding.integer(value, at: nextPath)) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let slot = try encoding.slot(value, parent: codingPath, key: LuaCodingKey(index: count))
        node.elements.append(slot)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = nextPath
        let child = EncodedNode()
        child.kind = .keyed
        node.elements.append(.node(child))
        return KeyedEncodingContainer(LuaKeyedEncodingContainer<NestedKey>(node: child, codingPath: path, encoding: encoding))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let path = nextPath
        let child = EncodedNode()
        child.kind = .unkeyed
        node.elements.append(.node(child))
        return LuaUnkeyedEncodingContainer(node: child, codingPath: path, encoding: encoding)
    }

    mutating func superEncoder() -> any Encoder {
        let path = nextPath
        let child = EncodedNode()
        node.elements.append(.node(child))
        return LuaEncoderImpl(node: child, codingPath: path, encoding: encoding)
    }
}

// MARK: - Single value

struct LuaSingleValueEncodingContainer: SingleValueEncodingContainer {
    let encoder: LuaEncoderImpl
    var codingPath: [any CodingKey] { encoder.codingPath }

    private func set(_ v: LuaValue) {
        precondition(encoder.node.kind == .empty,
                     "LuaValueEncoder: a single value encoded where a value was already encoded at \(codingPath.map(\.stringValue))")
        encoder.node.kind = .value
        encoder.node.value = v
    }

    mutating func encodeNil() throws { set(.nil) }
    mutating func encode(_ value: Bool) throws { set(.boolean(value)) }
    mutating func encode(_ value: String) throws { set(.string(Array(value.utf8))) }
    mutating func encode(_ value: Double) throws { set(.number(value)) }
    mutating func encode(_ value: Float) throws { set(.number(Double(value))) }
    mutating func encode(_ value: Int) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: Int8) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: Int16) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: Int32) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: Int64) throws { set(.integer(value)) }
    mutating func encode(_ value: UInt) throws { set(try encoder.encoding.integer(value, at: codingPath)) }
    mutating func encode(_ value: UInt8) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: UInt16) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: UInt32) throws { set(.integer(Int64(value))) }
    mutating func encode(_ value: UInt64) throws { set(try encoder.encoding.integer(value, at: codingPath)) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        if let v = try encoder.encoding.special(value, at: codingPath) { set(v); return }
        precondition(encoder.node.kind == .empty,
                     "LuaValueEncoder: a single value encoded where a value was already encoded at \(codingPath.map(\.stringValue))")
        // The value writes into this encoder's node (as JSONEncoder does), so
        // a type that wraps another (`struct Id { var raw: Int }` encoded
        // through a single value container) is just that value.
        try value.encode(to: encoder)
    }
}
