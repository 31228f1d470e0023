import Testing
import JobrunCore
@testable import Jobrun

/// The host's pure-Swift codec against the worker's: LuaValue -> bytes ->
/// a Lua state (JobrunCore's ValueDecoder) -> bytes (ValueEncoder) ->
/// LuaValue gives back the value it started from.
@Suite struct LuaWireTests {
    let lua = LuaSide()

    func roundTrip(_ v: LuaValue, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let bytes = try LuaWire.encode(v)
        let back = try LuaWire.decode(try lua.echo(bytes))
        #expect(back == v, "\(v) came back as \(back)", sourceLocation: sourceLocation)
    }

    @Test func edgeCases() throws {
        var cases: [LuaValue] = [nil, true, false, "", "a\0b", .string([0xFF, 0xFE, 0x00, 0x80]), [], [:],
                                 [[[[]]]], [1, nil, 3], [nil, nil, 5], ["x": [1, 2, ["y": -0.0]]],
                                 [.number(2.0): "two", .number(-0.0): "zero", .number(0.5): "half"],
                                 [.integer(0): 0, .integer(-1): 1, .integer(4): 4, .integer(2): 2, .integer(1): 1],
                                 [[1, 2]: "table key", true: false],
                                 .string(Array(repeating: 0, count: 100_000))]
        cases += ValueGenerator.integers.map { .integer($0) }
        cases += ValueGenerator.floats.map { .number($0) }
        for v in cases { try roundTrip(v) }
    }

    @Test func generatedValues() throws {
        var g = ValueGenerator(seed: 14)
        var mixedTables = 0
        for _ in 0..<3000 {
            let v = g.value()
            if let t = v.tableValue, !t.array.isEmpty, !t.hash.isEmpty { mixedTables += 1 }
            try roundTrip(v)
        }
        #expect(mixedTables > 100, "the generator makes tables with both parts")
    }

    @Test func severalValues() throws {
        var g = ValueGenerator(seed: 1404)
        for n in [0, 1, 2, 7] {
            let values = (0..<n).map { _ in g.value() }
            let back = try LuaWire.decodeValues(try lua.echoValues(try LuaWire.encodeValues(values)))
            #expect(back == values)
        }
    }

    /// Bit-exact floats: NaN payloads and -0.0 reach Lua as they are.
    @Test func floatsReachLuaExactly() throws {
        #expect(try lua.check(LuaWire.encode(-0.0), "local x = ... return math.type(x) == 'float' and 1/x < 0"))
        #expect(try lua.check(LuaWire.encode(.number(.nan)), "local x = ... return x ~= x"))
        #expect(try lua.check(LuaWire.encode(.integer(Int64.min)), "local x = ... return math.type(x) == 'integer' and x == math.mininteger"))
        #expect(try lua.check(LuaWire.encode(1.0), "local x = ... return math.type(x) == 'float'"))
        #expect(try lua.check(LuaWire.encode(["a": [10, 20, 30], .number(3.0): true]),
                              "local t = ... return #t.a == 3 and t.a[3] == 30 and t[3] == true"))
    }

    /// What only a Lua encoder writes: holes, shared tables, keys 1...n among the pairs.
    @Test func valuesMadeByLua() throws {
        #expect(try LuaWire.decode(lua.encode("return {1, nil, 3}")) == [1, nil, 3])
        #expect(try LuaWire.decode(lua.encode("local t = {1, 'x'} return {t, t, k = t}")) 
                == .table(LuaTable(array: [[1, "x"], [1, "x"]], hash: ["k": [1, "x"]])))
        #expect(try LuaWire.decode(lua.encode("local t = {} t[3] = 3 t[2] = 2 t[1] = 1 return t")) == [1, 2, 3])
        #expect(try LuaWire.decode(lua.encode("return {[1.0] = 'a', [2] = 'b', [2^53] = 'c'}")) 
                == .table(LuaTable(array: ["a", "b"], hash: [.integer(1 << 53): "c"])))
        #expect(try LuaWire.decode(lua.encode("return 'caf\\xe9'")) == .string([0x63, 0x61, 0x66, 0xE9]))
    }

    @Test func unrepresentableValuesAreNamed() throws {
        func error(_ code: String) throws -> LuaWireError? {
            do { _ = try LuaWire.decode(lua.encode(code), path: "result"); return nil } catch let e as LuaWireError { return e } catch { throw error }
        }
        #expect(try error("return {handler = function() end}")?.message == "result.handler: a function cannot be a LuaValue")
        #expect(try error("return {1, {print}}")?.message == "result[2][1]: a function cannot be a LuaValue")
        #expect(try error("return {x = _G}")?.message == "result.x: the global table (_G) cannot be a LuaValue")
        #expect(try error("local t = {} t.me = t return {t}")?.message == "result[1].me: a table that contains itself cannot be a LuaValue")
        #expect(try error("return {[function() end] = 1}")?.message == "result (key): a function cannot be a LuaValue")
        #expect(try error("return {1, 2}") == nil)
    }

    /// A message whose shared tables would expand without bound (each level
    /// names the one below twice) is refused, not copied 2^60 times.
    @Test func sharingThatExpandsIsRefused() throws {
        let bytes = try lua.encode("local t = {} for i = 1, 60 do t = {t, t} end return t")
        #expect(bytes.count < 2000)
        #expect(throws: LuaWireError.self) { try LuaWire.decode(bytes) }
        do { _ = try LuaWire.decode(bytes) } catch { #expect(error.kind == .tooLarge) }
        // A little sharing is fine.
        let small = try LuaWire.decode(lua.encode("local t = {} for i = 1, 10 do t = {t, t} end return t"))
        #expect(small[1][2][1][2] == small[2][1][1][1])
    }

    /// Nesting is bounded as the Lua side bounds it, shared tables counted
    /// at each place they appear.
    @Test func depthIsBounded() throws {
        var deep: LuaValue = 1
        for _ in 0..<LuaWire.maxDepth { deep = [deep] }
        try roundTrip(deep)
        do { _ = try LuaWire.encode([deep], path: "args"); Issue.record("encoded a value nested too deeply") } catch {
            #expect(error.kind == .tooDeep)
            #expect(error.message.hasPrefix("args[1][1][1]"))
        }
        let bytes = try lua.encode("""
            local a = {} for i = 1, 150 do a = {a} end
            local b = {a} for i = 1, 150 do b = {b} end
            return {a, b}
            """)
        do { _ = try LuaWire.decode(bytes); Issue.record("decoded a value nested too deeply") } catch {
            #expect(error.kind == .tooDeep)
        }
    }

    /// Any bytes give a value or an error: truncations and damage of valid
    /// messages never crash, and what the Swift side accepts the Lua side
    /// accepts too.
    @Test func damagedBytes() throws {
        var g = ValueGenerator(seed: 99)
        var rng = SplitMix64(seed: 7)
        for _ in 0..<300 {
            let bytes = try LuaWire.encode(g.value())
            for cut in [0, 1, bytes.count / 2, bytes.count - 1] where cut < bytes.count {
                #expect(throws: LuaWireError.self) { try LuaWire.decode(Array(bytes[..<cut])) }
            }
            var damaged = bytes
            for _ in 0...(rng.next() % 3) {
                damaged[Int(rng.next() % UInt64(damaged.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            if let v = try? LuaWire.decode(damaged) {
                // Accepted here: the worker reads the same value.
                #expect(try LuaWire.decode(lua.echo(damaged)) == v)
            }
        }
    }
}

extension LuaWireTests {
    /// A message that sets and clears key 1 of a long array over and over
    /// (no Lua encoder writes one, a damaged or hostile one may) decodes in
    /// time linear in its size, to the table Lua would build.
    @Test(.timeLimit(.minutes(1))) func pairsThatReshapeTheArrayAreLinear() throws {
        let n = 100_000, flips = 50_000
        var bytes: [UInt8] = [WireFormat.Tag.table]
        func u32(_ v: Int) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        u32(n); u32(2 * flips + 1)
        for _ in 0..<n { bytes += [WireFormat.Tag.integer, 2] }                                    // 1, 1, 1, ...
        for _ in 0..<flips { bytes += [WireFormat.Tag.integer, 2, WireFormat.Tag.nil, WireFormat.Tag.integer, 2, WireFormat.Tag.integer, 4] }
        bytes += [WireFormat.Tag.integer, 2, WireFormat.Tag.nil]                                   // [1] = nil
        let v = try LuaWire.decode(bytes)
        #expect(v.tableValue?.array.isEmpty == true && v.tableValue?.hash.count == n - 1 && v[2] == 1)
        #expect(try LuaWire.decode(lua.echo(bytes)) == v, "the worker builds the same table")
    }
}

extension LuaWireTests {
    /// Handles to shared objects and Processes are named, not misread.
    @Test func handlesAreNamed() throws {
        let queue: [UInt8] = [WireFormat.Tag.table, 1, 0, 0, 0, 0, 0, 0, 0, WireFormat.Tag.object, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0]
        do { _ = try LuaWire.decode(queue, path: "result"); Issue.record("decoded a handle") } catch {
            #expect(error.message == "result[1]: a jobrun object (JoinableQueue) cannot be a LuaValue")
            #expect(error.kind == .unrepresentable)
        }
        let process: [UInt8] = [WireFormat.Tag.process, 0x10, 0, 0, 1, 0x61]
        do { _ = try LuaWire.decode(process); Issue.record("decoded a Process") } catch {
            #expect(error.message == "value: a Process cannot be a LuaValue")
        }
    }
}

extension LuaWireTests {
    /// The other direction: random values made by Lua (integers, floats of
    /// every magnitude, NaN, -0.0, binary strings, tables with holes and
    /// float keys) go Lua -> bytes -> LuaValue -> bytes -> Lua and are the
    /// same value there (same types and math.type, same entries).
    @Test func luaMadeValuesComeBackToLua() throws {
        let generate = """
            local function scalar()
              local r = math.random(7)
              if r == 1 then return math.random(2) == 1
              elseif r == 2 then return math.random(-100, 100)
              elseif r == 3 then return math.random(math.mininteger, math.maxinteger)
              elseif r == 4 then return (math.random() - 0.5) * 10.0 ^ math.random(-300, 300)
              elseif r == 5 then
                local t = {} for i = 1, math.random(0, 20) do t[i] = string.char(math.random(0, 255)) end
                return table.concat(t)
              elseif r == 6 then return ({0/0, -0.0, 1/0, -1/0, 2^53, 2^63, 1.0, 3.0})[math.random(8)]
              else return "s" .. math.random(100) end
            end
            local function value(d)
              if d > 4 or math.random(3) > 1 then return scalar() end
              local t = {}
              for i = 1, math.random(0, 8) do t[i] = value(d + 1) end
              for i = 1, math.random(0, 5) do
                local k = scalar()
                if k ~= k then k = 0.5 end
                t[k] = value(d + 1)
              end
              if math.random(4) == 1 then t[math.random(1, 8)] = nil end
              return t
            end
            """
        let deepeq = """
            local function deepeq(a, b)
              if type(a) ~= type(b) then return false end
              if type(a) == "number" then
                if math.type(a) ~= math.type(b) then return false end
                if a ~= a then return b ~= b end
                if a == 0 and b == 0 then return 1/a == 1/b end
                return a == b
              end
              if type(a) ~= "table" then return a == b end
              local n = 0
              for k, v in next, a do
                n = n + 1
                if not deepeq(v, rawget(b, k)) then return false end
              end
              for _ in next, b do n = n - 1 end
              return n == 0
            end
            return deepeq(orig, ...)
            """
        var tables = 0
        for seed in 1...300 {
            let bytes = try lua.keep("math.randomseed(\(seed))\n" + generate + "\nreturn value(0)")
            let value = try LuaWire.decode(bytes)
            if let t = value.tableValue, !t.hash.isEmpty { tables += 1 }
            #expect(try lua.check(LuaWire.encode(value), deepeq), "seed \(seed): \(value)")
        }
        #expect(tables > 50, "the generator makes tables with a hash part")
    }
}
