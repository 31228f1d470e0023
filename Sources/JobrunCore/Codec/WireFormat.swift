/// The constants of the codec's byte format (ValueEncoder's header documents
/// it), for code that reads or writes that format without a Lua state: the
/// `Jobrun` library's `LuaValue` codec. `package`, not public: the format is
/// jobrun's own, and this file is the one place outside Codec/ that names it.
package enum WireFormat {
    /// One tag byte starts every value.
    package enum Tag {
        package static let `nil`: UInt8 = 0x00
        package static let `false`: UInt8 = 0x01
        package static let `true`: UInt8 = 0x02
        /// Zigzag varint.
        package static let integer: UInt8 = 0x03
        /// u64 little-endian IEEE bit pattern.
        package static let float: UInt8 = 0x04
        /// Varint length, bytes.
        package static let string: UInt8 = 0x05
        /// u32 n, u32 h, n array values, h key/value pairs.
        package static let table: UInt8 = 0x06
        /// Varint offset of an earlier table or function in the message.
        package static let reference: UInt8 = 0x07
        package static let function: UInt8 = 0x08
        package static let globals: UInt8 = 0x09
        package static let joinedUpvalue: UInt8 = 0x0A
        package static let cFunction: UInt8 = 0x0B
        /// u32 type, u32 slot, u32 generation.
        package static let object: UInt8 = 0x0C
        package static let process: UInt8 = 0x0D
        /// Set on a table, function or Process tag that a later reference names.
        package static let referencedBit: UInt8 = 0x80
    }

    /// Tables and functions nested deeper than this cannot be sent (the
    /// decoder refuses them too).
    package static let maxDepth = ValueEncoder.maxDepth

    /// The Lua-facing name of a jobrun object type (`"JoinableQueue"`), for
    /// error messages; nil for a type this build does not know.
    package static func objectTypeName(_ type: UInt32) -> String? {
        ObjectHandle.metatableName(type).map { String($0.dropFirst("jobrun.".count)) }
    }
}
