import JobrunCore

/// LuaValue <-> the bytes of jobrun's codec (JobrunCore's ValueEncoder
/// documents the format; `WireFormat` names its tags), with no Lua state:
/// the host side of every exchange with a worker. What a worker's
/// `ValueDecoder` reads these bytes as is the Lua value the LuaValue stands
/// for, and what its `ValueEncoder` writes decodes here to the LuaValue
/// that stands for it. No JSON, no intermediate form.
///
/// Encoding writes a table as its canonical form (array part, then the
/// hash part in the dictionary's order) and never writes references: a
/// LuaValue is a tree. Decoding reads everything a LuaValue can stand for,
/// including what only a Lua encoder writes (nils in the array section,
/// keys 1...n among the pairs, shared tables, which become copies), and
/// refuses the rest with an error naming where it sits:
///
///     result.handler: a function cannot be a LuaValue
///     result[2]: a table that contains itself cannot be a LuaValue
///
/// Like the Lua side's decoder it trusts nothing: any bytes give a value or
/// an error, within bounded time, memory and recursion.
enum LuaWire {
    /// Values nested deeper than this (tables inside tables) cannot be sent.
    static let maxDepth = WireFormat.maxDepth

    /// The bytes of one value (ValueDecoder.decode reads them).
    static func encode(_ value: LuaValue, path: String = "value") throws(LuaWireError) -> [UInt8] {
        var w = Writer()
        try w.run(path) { w throws(LuaWireError) in try w.value(value, depth: 0) }
        return w.bytes
    }

    /// The bytes of a list of values, as a message of several values
    /// (varint count, then the values: ValueDecoder.decodeValues reads them);
    /// the i-th is named `<path>[i]` in errors.
    static func encodeValues(_ values: [LuaValue], path: String = "values") throws(LuaWireError) -> [UInt8] {
        var w = Writer()
        w.varint(UInt64(values.count))
        for (i, v) in values.enumerated() {
            try w.run(path + "[\(i + 1)]") { w throws(LuaWireError) in try w.value(v, depth: 0) }
        }
        return w.bytes
    }

    /// The value of a one-value message (what ValueEncoder.encode wrote).
    static func decode(_ bytes: [UInt8], path: String = "value") throws(LuaWireError) -> LuaValue {
        var r = Reader(bytes)
        let v = try r.run(path) { r throws(LuaWireError) in try r.value(depth: 0).value }
        guard r.at == bytes.count else { throw .corrupt("\(bytes.count - r.at) bytes after the value", path: path) }
        return v
    }

    /// The values of a several-value message (what ValueEncoder.encodeValues wrote).
    static func decodeValues(_ bytes: [UInt8], path: String = "values") throws(LuaWireError) -> [LuaValue] {
        var r = Reader(bytes)
        // Every value takes at least one byte.
        guard let n = r.varint(), n <= UInt64(bytes.count - r.at) else { throw .corrupt("bad value count", path: path) }
        var values: [LuaValue] = []
        values.reserveCapacity(Int(n))
        for i in 0..<Int(n) {
            values.append(try r.run(path + "[\(i + 1)]") { r throws(LuaWireError) in try r.value(depth: 0).value })
        }
        guard r.at == bytes.count else { throw .corrupt("\(bytes.count - r.at) bytes after the values", path: path) }
        return values
    }
}

/// Why bytes and a LuaValue did not convert. `message` is
/// `<path>: <reason>`, the path from the root the caller named.
struct LuaWireError: Error, CustomStringConvertible, Equatable {
    enum Kind: Equatable {
        /// The bytes are not a message of the codec (truncated, damaged).
        case corrupt
        /// The bytes hold something a LuaValue cannot stand for: a
        /// function, a jobrun object, a cycle...
        case unrepresentable
        /// Nested deeper than the codec allows.
        case tooDeep
        /// Shared tables that would expand past the size limit.
        case tooLarge
    }

    var kind: Kind
    /// The path below the root, built while the error travels up.
    var path: String
    var reason: String

    var message: String { "\(path): \(reason)" }
    var description: String { message }

    static func corrupt(_ reason: String, path: String = "") -> LuaWireError {
        LuaWireError(kind: .corrupt, path: path, reason: "corrupt message: " + reason)
    }
}

// MARK: - Path steps

extension LuaWireError {
    /// The text of one step of a path: `.name`, `[3]`, `["a b"]`.
    static func step(_ key: LuaValue) -> String {
        if case .string(let s) = key, LuaValue.isIdentifier(s) { return "." + String(decoding: s, as: UTF8.self) }
        var d = key.description
        if d.count > 44 { d = String(d.prefix(40)) + "..." }
        return "[" + d + "]"
    }
}

// MARK: - Writer

private struct Writer {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(64) }

    /// Runs `body`; an error it throws gets `root` in front of its path.
    /// (`root` is made only then: a call's path is not built per value.)
    mutating func run(_ root: @autoclosure () -> String, _ body: (inout Writer) throws(LuaWireError) -> Void) throws(LuaWireError) {
        do { try body(&self) } catch { var e = error; e.path = root() + e.path; throw e }
    }

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    mutating func fixed<T: FixedWidthInteger>(_ v: T) {
        for i in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }

    mutating func value(_ v: LuaValue, depth: Int) throws(LuaWireError) {
        switch v {
        case .nil: bytes.append(WireFormat.Tag.nil)
        case .boolean(let b): bytes.append(b ? WireFormat.Tag.true : WireFormat.Tag.false)
        case .integer(let i):
            bytes.append(WireFormat.Tag.integer)
            varint(UInt64(bitPattern: (i << 1) ^ (i >> 63)))
        case .number(let d):
            bytes.append(WireFormat.Tag.float)
            fixed(d.bitPattern)
        case .string(let s):
            bytes.append(WireFormat.Tag.string)
            varint(UInt64(s.count))
            bytes.append(contentsOf: s)
        case .table(let t):
            try table(t, depth: depth)
        }
    }

    mutating func table(_ t: LuaTable, depth: Int) throws(LuaWireError) {
        if depth >= LuaWire.maxDepth {
            throw LuaWireError(kind: .tooDeep, path: "", reason: "value nested too deeply (more than \(LuaWire.maxDepth) levels)")
        }
        guard t.array.count <= Int(UInt32.max), t.hash.count <= Int(UInt32.max) else {
            throw LuaWireError(kind: .tooLarge, path: "", reason: "table too large to send (more than 2^32 entries)")
        }
        bytes.append(WireFormat.Tag.table)
        fixed(UInt32(t.array.count))
        fixed(UInt32(t.hash.count))
        for (i, v) in t.array.enumerated() {
            do { try value(v, depth: depth + 1) } catch { var e = error; e.path = "[\(i + 1)]" + e.path; throw e }
        }
        for (k, v) in t.hash {
            do { try value(k, depth: depth + 1) } catch { var e = error; e.path = " (key)" + e.path; throw e }
            do { try value(v, depth: depth + 1) } catch { var e = error; e.path = LuaWireError.step(k) + e.path; throw e }
        }
    }
}

// MARK: - Reader

private struct Reader {
    let bytes: [UInt8]
    var at = 0

    /// Tables a later reference names (tag bit 0x80), by the offset of
    /// their tag: the decoded value, its height (tables nested in it,
    /// itself included) and its size (values in it, itself included).
    var remembered: [Int: (value: LuaValue, height: Int, size: Int)] = [:]
    /// Remembered tables still being decoded: a reference to one is a cycle.
    var open: Set<Int> = []
    /// Values decoded so far, copies made for references included.
    var size = 0
    /// What `size` may reach: each value takes at least a byte, so only
    /// references (a shared table copied for each place that names it) can
    /// go past the message's length; they may add this much.
    let sizeLimit: Int
    static let referencedValuesLimit = 1 << 22

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        sizeLimit = bytes.count + Self.referencedValuesLimit
    }

    mutating func run<T>(_ root: @autoclosure () -> String, _ body: (inout Reader) throws(LuaWireError) -> T) throws(LuaWireError) -> T {
        do { return try body(&self) } catch { var e = error; e.path = root() + e.path; throw e }
    }

    var left: Int { bytes.count - at }

    mutating func u8() -> UInt8? {
        guard at < bytes.count else { return nil }
        defer { at += 1 }
        return bytes[at]
    }

    /// Unsigned LEB128, at most 64 bits (as ValueDecoder reads it).
    mutating func varint() -> UInt64? {
        var v: UInt64 = 0, shift: UInt64 = 0
        while at < bytes.count {
            let b = bytes[at]
            at += 1
            if shift == 63 && b > 1 { return nil }
            v |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type) -> T? {
        let n = MemoryLayout<T>.size
        guard left >= n else { return nil }
        var v: T = 0
        for i in 0..<n { v |= T(bytes[at + i]) << (8 * i) }
        at += n
        return v
    }

    /// One value at nesting `depth` and its height (0 for a scalar).
    mutating func value(depth: Int) throws(LuaWireError) -> (value: LuaValue, height: Int) {
        let tagAt = at
        guard let tag = u8() else { throw .corrupt("truncated at byte \(tagAt)") }
        size += 1
        switch tag {
        case WireFormat.Tag.nil: return (.nil, 0)
        case WireFormat.Tag.false: return (.boolean(false), 0)
        case WireFormat.Tag.true: return (.boolean(true), 0)
        case WireFormat.Tag.integer:
            guard let z = varint() else { throw .corrupt("bad integer at byte \(tagAt)") }
            return (.integer(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))), 0)
        case WireFormat.Tag.float:
            guard let bits = fixed(UInt64.self) else { throw .corrupt("truncated float at byte \(tagAt)") }
            return (.number(Double(bitPattern: bits)), 0)
        case WireFormat.Tag.string:
            guard let n = varint(), n <= UInt64(left) else { throw .corrupt("bad string length at byte \(tagAt)") }
            defer { at += Int(n) }
            return (.string(Array(bytes[at..<(at + Int(n))])), 0)
        case WireFormat.Tag.table, WireFormat.Tag.table | WireFormat.Tag.referencedBit:
            return try table(depth: depth, tagAt: tagAt, remembered: tag & WireFormat.Tag.referencedBit != 0)
        case WireFormat.Tag.reference:
            guard let o = varint(), o < UInt64(tagAt) else { throw .corrupt("bad reference at byte \(tagAt)") }
            let offset = Int(o)
            if open.contains(offset) { throw unrepresentable("a table that contains itself") }
            guard let r = remembered[offset] else { throw .corrupt("bad reference at byte \(tagAt)") }
            if depth + r.height > LuaWire.maxDepth {
                throw LuaWireError(kind: .tooDeep, path: "", reason: "value nested too deeply (more than \(LuaWire.maxDepth) levels, counting a shared table at each place it appears)")
            }
            size += r.size - 1
            if size > sizeLimit {
                throw LuaWireError(kind: .tooLarge, path: "", reason: "shared tables expand to more than \(Self.referencedValuesLimit) values when copied to each place they appear")
            }
            return (r.value, r.height)
        case WireFormat.Tag.function, WireFormat.Tag.function | WireFormat.Tag.referencedBit:
            throw unrepresentable("a function")
        case WireFormat.Tag.globals:
            throw unrepresentable("the global table (_G)")
        case WireFormat.Tag.cFunction:
            throw unrepresentable("a function")
        case WireFormat.Tag.object:
            guard let type = fixed(UInt32.self) else { throw .corrupt("truncated object at byte \(tagAt)") }
            throw unrepresentable("a jobrun object (\(WireFormat.objectTypeName(type) ?? "type \(type)"))")
        case WireFormat.Tag.process, WireFormat.Tag.process | WireFormat.Tag.referencedBit:
            throw unrepresentable("a Process")
        default:
            throw .corrupt("unknown tag 0x\(String(tag, radix: 16)) at byte \(tagAt)")
        }
    }

    private func unrepresentable(_ what: String) -> LuaWireError {
        LuaWireError(kind: .unrepresentable, path: "", reason: "\(what) cannot be a LuaValue")
    }

    mutating func table(depth: Int, tagAt: Int, remembered isRemembered: Bool) throws(LuaWireError) -> (value: LuaValue, height: Int) {
        if depth >= LuaWire.maxDepth { throw .corrupt("nested too deeply at byte \(tagAt)") }
        // Each array value takes at least 1 byte, each pair 2.
        guard let n = fixed(UInt32.self), let h = fixed(UInt32.self), UInt64(n) + UInt64(h) * 2 <= UInt64(left) else {
            throw .corrupt("bad table header at byte \(tagAt)")
        }
        let sizeBefore = size
        if isRemembered { open.insert(tagAt) }
        var height = 1
        var array: [LuaValue] = []
        array.reserveCapacity(Int(n))
        for i in 0..<Int(n) {
            let (v, vh) = try step("[\(i + 1)]") { r throws(LuaWireError) in try r.value(depth: depth + 1) }
            height = max(height, vh + 1)
            array.append(v)
        }
        var pairs: [(LuaValue, LuaValue)] = []
        pairs.reserveCapacity(Int(h))
        for _ in 0..<Int(h) {
            let keyAt = at
            let (k, kh) = try step(" (key)") { r throws(LuaWireError) in try r.value(depth: depth + 1) }
            switch k {
            case .nil: throw .corrupt("nil table key at byte \(keyAt)")
            case .number(let d) where d.isNaN: throw .corrupt("NaN table key at byte \(keyAt)")
            default: break
            }
            let (v, vh) = try step(LuaWireError.step(k)) { r throws(LuaWireError) in try r.value(depth: depth + 1) }
            height = max(height, kh + 1, vh + 1)
            pairs.append((k, v))
        }
        let value = LuaValue.table(LuaTable(decodedArray: array, pairs: pairs))
        if isRemembered {
            open.remove(tagAt)
            remembered[tagAt] = (value, height, size - sizeBefore + 1)
        }
        return (value, height)
    }

    /// Runs `body`; an error it throws gets `step` in front of its path.
    private mutating func step<T>(_ step: @autoclosure () -> String,
                                  _ body: (inout Reader) throws(LuaWireError) -> T) throws(LuaWireError) -> T {
        do { return try body(&self) } catch { var e = error; e.path = step() + e.path; throw e }
    }
}
