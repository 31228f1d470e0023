import JobrunCore

/// The host's side of the plug-in protocol: a request's bytes from a call,
/// a response's bytes to its outcome. `PluginMessage` (JobrunCore) names the
/// layout; the worker's side is `PluginWorker.handle`.
enum PluginWire {
    /// A call's request: id, plugin, function, argument.
    static func request(id: Int64, plugin: String, function: String, argument: LuaValue) throws(LuaWireError) -> [UInt8] {
        do throws(LuaWireError) {
            return try LuaWire.encodeValues([.integer(id), .string(plugin), .string(function), argument], path: "request")
        } catch {
            var e = error
            if e.path.hasPrefix("request[4]") { e.path = "argument" + e.path.dropFirst("request[4]".count) }
            throw e
        }
    }

    /// How a worker answered (the error table's fields as strings, "" when absent).
    struct Failure: Equatable, Sendable {
        var code: String
        var message: String
        var traceback: String
        var plugin: String
        var function: String
    }

    enum Response: Equatable {
        case success(id: Int64, result: LuaValue)
        case failure(id: Int64, Failure)
    }

    /// The outcome a response carries. A result the host cannot hold (what
    /// the worker's check lets through: shared tables expanding past the
    /// copy limit) is an `unsendableResult` failure naming its place
    /// (`result.x: ...`); bytes that are no response at all throw.
    static func response(_ bytes: [UInt8]) throws(LuaWireError) -> Response {
        let values: [LuaValue]
        do throws(LuaWireError) {
            values = try LuaWire.decodeValues(bytes, path: "response")
        } catch {
            guard error.kind != .corrupt, let id = id(of: bytes) else { throw error }
            var message = error.message
            if message.hasPrefix("response[3]") { message = "result" + message.dropFirst("response[3]".count) }
            return .failure(id: id, Failure(code: PluginErrorCode.unsendableResult.rawValue, message: message,
                                            traceback: "", plugin: "", function: ""))
        }
        guard values.count == PluginMessage.responseCount, case .integer(let id) = values[0],
              case .boolean(let ok) = values[1] else {
            throw .corrupt("not a plug-in response (id, ok, result)", path: "response")
        }
        if ok { return .success(id: id, result: values[2]) }
        let e = values[2]
        func field(_ name: String) -> String { e[.string(name)].stringValue ?? "" }
        typealias F = PluginMessage.ErrorField
        return .failure(id: id, Failure(code: field(F.code), message: field(F.message), traceback: field(F.traceback),
                                        plugin: field(F.plugin), function: field(F.function)))
    }

    /// The id at the start of a response (count 3, then an integer), read
    /// without decoding the rest: a response whose result cannot be decoded
    /// still goes to its call.
    static func id(of bytes: [UInt8]) -> Int64? {
        guard bytes.count >= 3, bytes[0] == UInt8(PluginMessage.responseCount), bytes[1] == WireFormat.Tag.integer else { return nil }
        var v: UInt64 = 0, shift: UInt64 = 0, i = 2
        while i < bytes.count, shift < 64 {
            let b = bytes[i]
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }   // zigzag
            shift += 7; i += 1
        }
        return nil
    }
}
