import Testing
import Jobrun

@Suite struct LuaValueTests {
    @Test func literals() {
        let v: LuaValue = ["path": "a.png", "width": 128, "scale": 0.5, "ok": true, "none": nil, "tags": ["x", "y"]]
        #expect(v["path"].stringValue == "a.png")
        #expect(v["width"] == .integer(128))
        #expect(v["scale"] == .number(0.5))
        #expect(v["ok"].boolValue == true)
        #expect(v["none"].isNil)
        #expect(v.tableValue?.count == 5, "a nil value makes no entry")
        #expect(v["tags"][1] == "x" && v["tags"][2] == "y" && v["tags"][3] == nil)
        #expect(v["missing"]["deeper"][1] == nil, "lookups chain through non-tables")
        let empty: LuaValue = [:]
        #expect(empty == [] && empty.arrayValue == [])
    }

    @Test func integersAndFloatsStayApart() {
        #expect(LuaValue.integer(1) != LuaValue.number(1.0))
        #expect(LuaValue.number(0.0) != LuaValue.number(-0.0))
        #expect(LuaValue.number(.nan) == LuaValue.number(.nan))
        #expect(Set<LuaValue>([1, 1.0, 0.0, -0.0, .number(.nan), .number(.nan)]).count == 5)
        #expect(LuaValue.number(3.0).intValue == 3 && LuaValue.number(3.5).intValue == nil)
        #expect(LuaValue.number(9.3e18).int64Value == nil, "past Int64: no integer")
        #expect(LuaValue.integer(3).doubleValue == 3.0)
        #expect(LuaValue.string("3").intValue == nil, "strings never read as numbers")
    }

    @Test func stringsAreBytes() {
        let bin = LuaValue.bytes([0x61, 0x00, 0xFF])
        #expect(bin.bytesValue == [0x61, 0x00, 0xFF])
        #expect(bin.stringValue == nil, "not UTF-8: no String, nothing replaced")
        #expect(LuaValue.string("é") == .string([0xC3, 0xA9]))
        #expect(LuaValue.string("a\0b").stringValue == "a\0b")
        let width = 128
        let text: LuaValue = "w=\(width)"
        #expect(text == .string("w=128"))
    }

    /// The canonical form: keys 1...n in the array part, whatever the order they came in.
    @Test func tableNormalisation() {
        var t = LuaTable()
        t[3] = "c"; t[2] = "b"
        #expect(t.array == [] && t.hash.count == 2)
        t[1] = "a"
        #expect(t.array == ["a", "b", "c"] && t.hash.isEmpty)
        t[.number(4.0)] = "d"
        #expect(t.array == ["a", "b", "c", "d"], "2.0-style keys are integers, as in Lua")
        t[2] = nil
        #expect(t.array == ["a"] && t.hash == [3: "c", 4: "d"], "a hole sends what follows to the hash part")
        #expect(t == LuaTable(array: ["a", nil, "c", "d"]))
        #expect(t == [1: "a", 3: "c", 4: "d"])
        #expect(t[.number(-0.0)] == nil)
        t[.number(-0.0)] = "zero"
        #expect(t[0] == "zero" && t.hash[.integer(0)] == "zero")
        t.append("x")
        #expect(t[2] == "x" && t.array == ["a", "x", "c", "d"])
        #expect(Array(t.map(\.key).prefix(4)) == [1, 2, 3, 4])
        #expect(LuaValue([1, nil]).tableValue?.count == 1, "a table cannot end in nil")
        #expect(LuaTable(array: [1, 2], hash: [2: "two"]).array == [1, "two"], "hash overrides the array position")
        #expect(LuaValue.table(t).arrayValue == nil && LuaValue([1, 2]).arrayValue == [1, 2])
        #expect(LuaValue.table(t).dictionaryValue?.count == 5)
    }

    @Test func setThroughValue() {
        var v: LuaValue = ["a": [1, 2]]
        v["a"][3] = 3
        v["b"] = "x"
        v["a"][1] = nil
        #expect(v == ["a": [2: 2, 3: 3], "b": "x"])
    }

    @Test func description() {
        let v: LuaValue = [1, 2.0, "a\"b\n", .bytes([0, 200])]
        #expect(v.description == #"{1, 2.0, "a\"b\n", "\000\200"}"#)
        let t: LuaValue = ["name": "x", "end": 1, "a b": true, .number(0.5): -1, false: [:]]
        #expect(t.description == #"{["a b"] = true, ["end"] = 1, [0.5] = -1, [false] = {}, name = "x"}"#)
        #expect(LuaValue.number(-.infinity).description == "-inf")
        #expect(LuaValue.number(1e100).description == "1e+100")
        #expect(LuaValue.nil.description == "nil")
        #expect(LuaValue.string("héllo").description == "\"héllo\"")
    }
}
