// A LuaValue prints as the Lua expression that builds it:
//
//     {1, 2, name = "x", ["a b"] = 1.5, [true] = "\0\255"}
//
// Floats always show they are floats (`1.0`, `1e+100`, `nan`, `-inf`), strings
// are quoted with Lua escapes (bytes that are not printable or not UTF-8 as
// `\ddd`), and the hash part is sorted by its printed keys, so equal values
// print the same.

extension LuaValue: CustomStringConvertible {
    /// The value as a Lua expression (see above).
    public var description: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .nil: out += "nil"
        case .boolean(let b): out += b ? "true" : "false"
        case .integer(let i): out += String(i)
        case .number(let d): out += Self.floatText(d)
        case .string(let s): Self.quote(s, to: &out)
        case .table(let t): t.write(to: &out)
        }
    }

    /// Swift's shortest round-tripping form, which always has a `.`, an
    /// exponent, `nan` or `inf`: never mistaken for an integer.
    static func floatText(_ d: Double) -> String {
        if d.isNaN { return d.sign == .minus ? "-nan" : "nan" }
        return d.description
    }

    static func quote(_ bytes: [UInt8], to out: inout String) {
        out += "\""
        func escape(_ c: UInt8) {
            switch c {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            default:
                let d = String(c)
                out += "\\" + String(repeating: "0", count: 3 - d.count) + d
            }
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            for u in text.unicodeScalars {
                if u.value < 0x20 || u.value == 0x7F || u == "\"" || u == "\\" { escape(UInt8(u.value)) } else { out.unicodeScalars.append(u) }
            }
        } else {
            for c in bytes {
                if c >= 0x20 && c < 0x7F && c != 0x22 && c != 0x5C { out.unicodeScalars.append(Unicode.Scalar(c)) } else { escape(c) }
            }
        }
        out += "\""
    }

    /// Whether `bytes` can be written as a bare field name (`t.name`).
    static func isIdentifier(_ bytes: [UInt8]) -> Bool {
        guard let first = bytes.first, first == 0x5F || isLetter(first),
              bytes.allSatisfy({ $0 == 0x5F || isLetter($0) || (0x30...0x39).contains($0) }) else { return false }
        return !keywords.contains(String(decoding: bytes, as: UTF8.self))
    }

    private static func isLetter(_ c: UInt8) -> Bool { (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) }

    private static let keywords: Set<String> = [
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
        "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ]
}

extension LuaTable: CustomStringConvertible {
    /// The table as a Lua constructor: `{1, 2, name = "x", [3.5] = true}`.
    public var description: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        if isEmpty { out += "{}"; return }
        var parts: [String] = []
        parts.reserveCapacity(count)
        for v in array { parts.append(v.description) }
        var fields: [(key: String, text: String)] = []
        for (k, v) in hash {
            let key: String
            if case .string(let s) = k, LuaValue.isIdentifier(s) {
                key = String(decoding: s, as: UTF8.self)
                fields.append((key, key + " = " + v.description))
            } else {
                key = k.description
                fields.append((key, "[" + key + "] = " + v.description))
            }
        }
        fields.sort { $0.key < $1.key }
        parts += fields.map(\.text)
        out += "{" + parts.joined(separator: ", ") + "}"
    }
}
