import CJobrunShims

/// Finds the jobrun objects (0x0C handles) in an encoded message without
/// decoding it, for the bytes that hold references but are dropped or
/// copied undecoded (ObjectTable.swift: a freed queue's items, a replaced
/// Dict value, a kept copy). Walks the format of ValueEncoder's header; on
/// bytes it cannot read it stops (what it found so far is reported).
enum ValueScan {
    /// A handle as the message names it (0x0C: type, slot, generation),
    /// and the offset of its tag.
    struct Handle { var type: UInt32, slot: UInt32, generation: UInt32, at: Int }

    /// Calls `body` with the slot of every handle in the message.
    static func forEachObject(_ bytes: UnsafeRawBufferPointer, _ body: (UInt32) -> Void) {
        forEachHandle(bytes) { body($0.slot) }
    }

    /// False for a message that holds no handle for sure: a scalar (the
    /// common queue item), told by its first byte.
    @inline(__always)
    static func mayHoldObjects(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count > 0 && bytes.load(as: UInt8.self) > 0x05
    }

    /// Calls `body` with every handle in the message, in the order the
    /// decoder meets them.
    static func forEachHandle(_ bytes: UnsafeRawBufferPointer, _ body: (Handle) -> Void) {
        guard mayHoldObjects(bytes), let p = bytes.baseAddress else { return }
        var s = Scanner(base: p, end: bytes.count)
        _ = s.value(body, depth: 0)
    }

    /// Calls `body` with every handle of an `encodeValues` message (a worker's arguments).
    static func forEachObjectInValues(_ bytes: UnsafeRawBufferPointer, _ body: (UInt32) -> Void) {
        forEachHandleInValues(bytes) { body($0.slot) }
    }

    static func forEachHandleInValues(_ bytes: UnsafeRawBufferPointer, _ body: (Handle) -> Void) {
        guard let p = bytes.baseAddress, bytes.count > 0 else { return }
        var s = Scanner(base: p, end: bytes.count)
        guard let n = s.varint() else { return }
        var i: UInt64 = 0
        while i < n, s.value(body, depth: 0) { i += 1 }
    }

    /// Whether the message holds a handle.
    static func hasObjects(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var found = false
        forEachObject(bytes) { _ in found = true }
        return found
    }

    private struct Scanner {
        let base: UnsafeRawPointer
        let end: Int
        var at = 0

        init(base: UnsafeRawPointer, end: Int) { self.base = base; self.end = end }

        mutating func u8() -> UInt8? {
            guard at < end else { return nil }
            defer { at += 1 }
            return base.load(fromByteOffset: at, as: UInt8.self)
        }

        mutating func varint() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while let b = u8() {
                v |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
                if shift > 63 { return nil }
            }
            return nil
        }

        mutating func skip(_ n: UInt64) -> Bool {
            guard n <= UInt64(end - at) else { return false }
            at += Int(n)
            return true
        }

        mutating func fixed32() -> UInt32? {
            guard end - at >= 4 else { return nil }
            defer { at += 4 }
            return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self))
        }

        /// Skips one value; false when the bytes cannot be read further.
        mutating func value(_ body: (Handle) -> Void, depth: Int) -> Bool {
            guard depth <= ValueEncoder.maxDepth, let tag = u8() else { return false }
            switch tag & 0x7f {
            case 0x00, 0x01, 0x02, 0x09: return true
            case 0x03, 0x07: return varint() != nil
            case 0x04: return skip(8)
            case 0x05, 0x0B: guard let n = varint() else { return false }; return skip(n)
            case 0x06:
                guard let n = fixed32(), let h = fixed32() else { return false }
                var k: UInt64 = 0
                while k < UInt64(n) + 2 * UInt64(h) {
                    if !value(body, depth: depth + 1) { return false }
                    k += 1
                }
                return true
            case 0x08:
                guard let n = varint(), skip(8), skip(n), let ups = u8() else { return false }
                for _ in 0..<ups {
                    guard at < end else { return false }
                    if base.load(fromByteOffset: at, as: UInt8.self) == 0x0A {
                        at += 1
                        guard varint() != nil, u8() != nil else { return false }
                    } else if !value(body, depth: depth + 1) {
                        return false
                    }
                }
                return true
            case 0x0C:
                guard let type = fixed32(), let slot = fixed32(), let generation = fixed32() else { return false }
                body(Handle(type: type, slot: slot, generation: generation, at: at - 13))
                return true
            case 0x0D:
                guard varint() != nil, varint() != nil, u8() != nil, let n = varint() else { return false }
                return skip(n)
            default: return false
            }
        }
    }
}
