/// The plug-in protocol: what a host sends a plug-in worker and what it
/// gets back, in the queues' codec format (WireFormat; Jobrun's LuaWire
/// writes and reads it on the host side, ValueEncoder/ValueDecoder on the
/// worker's). The one place that names the layout: both sides use it.
///
/// Both messages are several-value messages (LuaWire.encodeValues /
/// decodeValues, ValueEncoder.encodeValues / ValueDecoder.decodeValues):
///
///     request:   id (integer), plugin (string), function (string), argument (any value)
///     response:  id (integer), true, result               -- the call returned
///                id (integer), false, error table         -- it did not
///
/// The plug-in's function is called with the argument as its one parameter
/// (`function M.resize(opts)`; a nil argument calls it with nil); several
/// parameters travel as one table. Its first return value is the result;
/// further ones are dropped. `id` is the host's, echoed unchanged.
///
/// The error table has string fields `code` (a `PluginErrorCode` raw value),
/// `message`, `plugin`, `function`, and `traceback` for `luaError` (the
/// plug-in's frames only, `plugins/x.lua:12: in function 'resize'`).
package enum PluginMessage {
    /// Values in a request: id, plugin, function, argument.
    package static let requestCount = 4
    /// Values in a response: id, ok, result or error.
    package static let responseCount = 3

    /// Fields of the error table of a failed call.
    package enum ErrorField {
        package static let code = "code"
        package static let message = "message"
        package static let traceback = "traceback"
        package static let plugin = "plugin"
        package static let function = "function"
    }

    /// The bytes of a failed call's response, written without a Lua state:
    /// a worker's answer to a request it cannot read, or after its Lua state
    /// failed outside the call itself.
    package static func errorResponse(id: Int64, code: PluginErrorCode, message: String,
                                      plugin: String = "", function: String = "") -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(64 + message.utf8.count)
        varint(&b, UInt64(responseCount))
        b.append(WireFormat.Tag.integer)
        varint(&b, UInt64(bitPattern: (id << 1) ^ (id >> 63)))   // zigzag
        b.append(WireFormat.Tag.false)
        let fields = [(ErrorField.code, code.rawValue), (ErrorField.message, message),
                      (ErrorField.plugin, plugin), (ErrorField.function, function)]
        b.append(WireFormat.Tag.table)
        for n in [UInt32(0), UInt32(fields.count)] { for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: n >> (8 * i))) } }   // u32 LE
        for (k, v) in fields { string(&b, k); string(&b, v) }
        return b
    }

    private static func varint(_ b: inout [UInt8], _ v: UInt64) {
        var v = v
        while v >= 0x80 { b.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        b.append(UInt8(v))
    }

    private static func string(_ b: inout [UInt8], _ s: String) {
        b.append(WireFormat.Tag.string)
        varint(&b, UInt64(s.utf8.count))
        b.append(contentsOf: s.utf8)
    }
}

/// Why a plug-in call failed, as the worker tells it (the error table's
/// `code`). The host adds its own (timed out, worker died, shut down).
package enum PluginErrorCode: String, Sendable, CaseIterable {
    /// No `<directory>/<name>.lua`, or a name that is not a plug-in name.
    case pluginNotFound
    /// The file (or its folder) exists but cannot be read.
    case pluginNotReadable
    /// The plug-in or a sibling it requires does not compile (`file:line: ...`),
    /// or is a precompiled chunk.
    case syntaxError
    /// The file ran but did not return a table of functions.
    case pluginNotATable
    /// The plug-in's table has no function of that name.
    case functionMissing
    /// The plug-in raised an error (message and traceback), while loading or
    /// in the call; an error value that is a table gives its `__tostring` or
    /// its `message` field.
    case luaError
    /// The result holds what a LuaValue cannot (a function, coroutine,
    /// userdata, jobrun object, a table containing itself); the message names where.
    case unsendableResult
    /// The call went past the worker's Lua memory limit.
    case limitExceeded
    /// The request was not a plug-in request (corrupt bytes, wrong fields).
    case badRequest
}
