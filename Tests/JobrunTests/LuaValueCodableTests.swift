import Foundation
import Testing
@testable import Jobrun

private struct Resize: Codable, Equatable {
    var path: String
    var width: Int
    var scale: Double
    var keepRatio = true
    var label: String? = nil
    var tags: [String] = []
    var raw: [UInt8] = []
}

private enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case square(Int)
    case none
}

private struct Everything: Codable, Equatable {
    var i8: Int8, i16: Int16, i32: Int32, i64: Int64, i: Int
    var u8: UInt8, u16: UInt16, u32: UInt32, u64: UInt64, u: UInt
    var f: Float, d: Double, b: Bool, s: String
    var data: Data
    var optionals: [Int?]
    var nested: [[String: [Int]]]
    var byNumber: [Int: String]
    var byName: [String: Int]
    var shapes: [Shape]
    var free: LuaValue
    var set: Set<Int>
}

private class Animal: Codable {
    var name = "rex"
    init() {}
}

private final class Dog: Animal {
    var good = true
    override init() { super.init() }
    enum CodingKeys: String, CodingKey { case good }
    required init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        good = try c.decode(Bool.self, forKey: .good)
        try super.init(from: c.superDecoder())
    }
    override func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(good, forKey: .good)
        try super.encode(to: c.superEncoder())
    }
}

/// A type written by hand against every kind of container, nested ones included.
private struct Hand: Codable, Equatable {
    var a: Int
    var list: [String]
    var inner: Int
    enum K: String, CodingKey { case a, rest, inner }
    init(a: Int, list: [String], inner: Int) { self.a = a; self.list = list; self.inner = inner }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: K.self)
        try c.encode(a, forKey: .a)
        var u = c.nestedUnkeyedContainer(forKey: .rest)
        for s in list { try u.encode(s) }
        var n = u.nestedContainer(keyedBy: K.self)
        try n.encode(inner, forKey: .inner)
    }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: K.self)
        a = try c.decode(Int.self, forKey: .a)
        var u = try c.nestedUnkeyedContainer(forKey: .rest)
        var l: [String] = []
        while let s = try? u.decode(String.self) { l.append(s) }
        list = l
        inner = try u.nestedContainer(keyedBy: K.self).decode(Int.self, forKey: .inner)
        #expect(u.isAtEnd)
    }
}

@Suite struct LuaValueCodableTests {
    let encoder = LuaValueEncoder()
    let decoder = LuaValueDecoder()

    func roundTrip<T: Codable & Equatable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let v = try encoder.encode(value)
        #expect(try decoder.decode(T.self, from: v) == value, sourceLocation: sourceLocation)
        // And through the codec's bytes, as a plug-in call carries it.
        let wire = try LuaWire.decode(LuaWire.encode(v))
        #expect(try decoder.decode(T.self, from: wire) == value, sourceLocation: sourceLocation)
    }

    @Test func structBecomesTable() throws {
        let r = Resize(path: "a.png", width: 128, scale: 2, tags: ["x"], raw: [0, 255])
        let v = try encoder.encode(r)
        #expect(v == ["path": "a.png", "width": 128, "scale": 2.0, "keepRatio": true, "tags": ["x"], "raw": .bytes([0, 255])])
        #expect(v["scale"] == .number(2.0), "a Double stays a float")
        #expect(v.tableValue?.hash[.string("label")] == nil, "nil is no entry")
        try roundTrip(r)
        try roundTrip(Resize(path: "", width: -1, scale: -0.0, label: "l"))
    }

    @Test func everything() throws {
        let e = Everything(i8: -128, i16: .max, i32: .min, i64: .min, i: 42, u8: 255, u16: .max, u32: .max,
                           u64: UInt64(Int64.max), u: 7, f: 1.5, d: .infinity, b: false, s: "é\0",
                           data: Data([0, 1, 0xFF]), optionals: [1, nil, 3, nil, nil, 6], nested: [["a": [1]], [:]],
                           byNumber: [1: "one", 10: "ten", -3: "minus three"], byName: ["5": 5, "x": 1],
                           shapes: [.circle(radius: 1), .square(2), .none], free: ["any": [1, "thing"]], set: [3, 1, 2])
        try roundTrip(e)
        let v = try encoder.encode(e)
        #expect(v["byNumber"][10] == "ten", "[Int: T] keys are Lua integers")
        #expect(v["byName"]["5"] == 5, "[String: T] keys stay strings")
        #expect(v["data"] == .bytes([0, 1, 0xFF]))
        #expect(v["optionals"] == [1, nil, 3, nil, nil, 6])
        #expect(v["free"] == ["any": [1, "thing"]])
    }

    @Test func containersOfEveryKind() throws {
        try roundTrip(Hand(a: 1, list: ["p", "q"], inner: 9))
        #expect(try encoder.encode(Hand(a: 1, list: ["p"], inner: 9)) == ["a": 1, "rest": ["p", ["inner": 9]]])
        let dog = try encoder.encode(Dog())
        #expect(dog == ["good": true, "super": ["name": "rex"]])
        let back = try decoder.decode(Dog.self, from: dog)
        #expect(back.name == "rex" && back.good)
        #expect(try encoder.encode(Optional<Int>.none) == nil)
        #expect(try encoder.encode([1.5, 2]) == [1.5, 2.0])
        #expect(try decoder.decode([String: Int].self, from: ["a": 1, "b": 2]) == ["a": 1, "b": 2])
    }

    @Test func integerWidthsAreChecked() throws {
        #expect(throws: EncodingError.self) { try encoder.encode(UInt64.max) }
        #expect(throws: EncodingError.self) { try encoder.encode(["n": UInt(Int64.max) + 1]) }
        #expect(try encoder.encode(UInt64(Int64.max)) == .integer(.max))
        func mismatch<T: Decodable>(_ t: T.Type, _ v: LuaValue) -> String? {
            do { _ = try decoder.decode(t, from: v); return nil } catch { return "\(error)" }
        }
        #expect(mismatch(Int8.self, 300)?.contains("300 does not fit in Int8") == true)
        #expect(mismatch(UInt.self, -1)?.contains("does not fit in UInt") == true)
        #expect(mismatch(Int.self, 2.5)?.contains("expected an integer, found a float (2.5)") == true)
        #expect(mismatch(Int.self, 1e19)?.contains("does not fit in Int") == true)
        #expect(try decoder.decode(UInt64.self, from: 1e19) == 10_000_000_000_000_000_000)
        #expect(try decoder.decode(Int.self, from: 2.0) == 2, "a whole float reads as an integer, as in Lua")
        #expect(try decoder.decode(Double.self, from: 2) == 2.0)
        #expect(mismatch(Float.self, 1e300)?.contains("does not fit in Float") == true)
        #expect(try decoder.decode(Float.self, from: .number(.infinity)) == .infinity)
    }

    @Test func decodingErrorsNameThePath() throws {
        func error<T: Decodable>(_ t: T.Type, _ v: LuaValue) -> DecodingError? {
            do { _ = try decoder.decode(t, from: v); return nil } catch let e as DecodingError { return e } catch { return nil }
        }
        let good: LuaValue = ["path": "a", "width": 1, "scale": 1.0, "keepRatio": true, "tags": ["a", 2], "raw": ""]
        guard case .typeMismatch(_, let c)? = error(Resize.self, good) else { Issue.record("no type mismatch"); return }
        #expect(c.codingPath.map(\.stringValue) == ["tags", "Index 1"])
        #expect(c.debugDescription == "expected a string, found an integer (2)")
        guard case .keyNotFound(let k, _)? = error(Resize.self, ["path": "a"]) else { Issue.record("no key not found"); return }
        #expect(k.stringValue == "width")
        guard case .valueNotFound? = error(Resize.self, nil) else { Issue.record("no value not found"); return }
        guard case .dataCorrupted(let d)? = error(String.self, .bytes([0xFF])) else { Issue.record("no data corrupted"); return }
        #expect(d.debugDescription.contains("not valid UTF-8"))
        #expect(try decoder.decode([UInt8].self, from: .bytes([0xFF])) == [0xFF])
        #expect(error(Bool.self, 1) != nil, "only true and false are booleans")
        guard case .typeMismatch? = error([Int].self, ["a": 1]) else { Issue.record("a keyed table read as a list"); return }
        guard case .dataCorrupted? = error([Int?].self, [.integer(1 << 40): 1]) else { Issue.record("a sparse table read as a list"); return }
        #expect(try decoder.decode([Int?].self, from: [.integer(3): 3]) == [nil, nil, 3])
    }

    @Test func cyclesAndDepthAreErrors() throws {
        final class Node: Encodable { var next: Node? }
        let n = Node()
        n.next = n
        #expect(throws: EncodingError.self) { try encoder.encode(n) }
        struct Nothing: Encodable { func encode(to encoder: any Encoder) throws {} }
        #expect(throws: EncodingError.self) { try encoder.encode(Nothing()) }
    }

    @Test func luaValueThroughJSON() throws {
        let v: LuaValue = ["a": [1, 2.5, "x", true, nil], "b": ["c": "d"]]
        let json = try JSONEncoder().encode(v)
        let back = try JSONDecoder().decode(LuaValue.self, from: json)
        #expect(back["b"]["c"] == "d")
        #expect(back["a"][3] == "x" && back["a"][1] == 1)
        #expect(throws: EncodingError.self) { try JSONEncoder().encode(LuaValue([true: 1])) }
    }
}
