// EmbedLuaTool OUTPUT FILE.lua...
//
// Writes OUTPUT, a Swift file declaring
//
//     enum EmbeddedLua {
//         static func source(_ name: String) -> StaticString?
//     }
//
// where `name` is a file's name ("pool.lua") and the result its bytes, as
// they are on disk. Run by the EmbedLua build-tool plugin; not installed.
//
// Each file becomes one escaped string literal: a StaticString costs nothing
// at run time (the bytes sit in the binary's read-only data) and compiles
// much faster than a `[UInt8]` literal of the same size. No Foundation, so
// the tool builds quickly and links statically with `--static-swift-stdlib`.
import Glibc

func fail(_ message: String) -> Never {
    let text = Array("EmbedLuaTool: \(message)\n".utf8)
    _ = write(2, text, text.count)
    exit(1)
}

func readFile(_ path: String) -> [UInt8] {
    guard let f = fopen(path, "rb") else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        bytes += chunk[..<n]
        if n < chunk.count { break }
    }
    if ferror(f) != 0 { fail("cannot read \(path)") }
    return bytes
}

/// The bytes as the body of a Swift string literal. Printable ASCII and
/// UTF-8 sequences stay as they are; quotes, backslashes and control
/// characters are escaped. A StaticString must be valid UTF-8, so a file
/// that is not fails the build, naming it.
func literal(_ bytes: [UInt8], path: String) -> String {
    guard String(validating: bytes, as: UTF8.self) != nil else { fail("\(path) is not valid UTF-8") }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count + bytes.count / 8)
    for b in bytes {
        switch b {
        case UInt8(ascii: "\\"): out += Array(#"\\"#.utf8)
        case UInt8(ascii: "\""): out += Array(#"\""#.utf8)
        case UInt8(ascii: "\n"): out += Array(#"\n"#.utf8)
        case UInt8(ascii: "\t"): out += Array(#"\t"#.utf8)
        case UInt8(ascii: "\r"): out += Array(#"\r"#.utf8)
        case 0..<0x20, 0x7f: out += Array("\\u{\(String(b, radix: 16))}".utf8)
        default: out.append(b)
        }
    }
    return String(decoding: out, as: UTF8.self)
}

let args = CommandLine.arguments
guard args.count >= 2 else { fail("usage: EmbedLuaTool OUTPUT FILE.lua...") }
var swift = """
    // Generated at build time by Plugins/EmbedLua from the target's .lua files. Do not edit.

    enum EmbeddedLua {
        /// The text of the embedded file `name` ("pool.lua"), or nil.
        static func source(_ name: String) -> StaticString? {
            switch name {

    """
var seen: Set<String> = []
for path in args.dropFirst(2) {
    let name = String(path.split(separator: "/").last ?? Substring(path))
    guard seen.insert(name).inserted else { fail("two embedded files are named \(name)") }
    swift += "        case \"\(name)\": return \"\(literal(readFile(path), path: path))\"\n"
}
swift += """
            default: return nil
            }
        }
    }

    """

// Written only when it changed, so an unchanged file does not make the
// target recompile.
let output = args[1]
if let f = fopen(output, "rb") {
    fclose(f)
    if readFile(output) == Array(swift.utf8) { exit(0) }
}
guard let f = fopen(output, "wb") else { fail("cannot write \(output): \(String(cString: strerror(errno)))") }
let bytes = Array(swift.utf8)
if fwrite(bytes, 1, bytes.count, f) != bytes.count || fclose(f) != 0 { fail("cannot write \(output)") }
