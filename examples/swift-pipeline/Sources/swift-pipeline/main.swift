import Jobrun

// swift-pipeline [COUNT] [SCRIPT]: feeds 1...COUNT (default 1000) to two Lua
// workers running SCRIPT (default square.lua in the working directory) and
// adds up the squares they send back.

struct Square: Codable { var n: Int; var square: Int; var worker: String }

let arguments = CommandLine.arguments
let count = arguments.count > 1 ? Int(arguments[1]) ?? 1000 : 1000
let script = arguments.count > 2 ? arguments[2] : "square.lua"

let numbers = try JoinableQueue(name: "numbers")
let squares = try JoinableQueue(name: "squares")
let workers = try (1...2).map { i in
    try ScriptWorker.start(script: script, arguments: [.queue(numbers), .queue(squares)], name: "square-\(i)")
}
for n in 1...count { try await numbers.put(.integer(Int64(n))) }
for _ in workers { try await numbers.put("stop") }

var total = 0
var byWorker: [String: Int] = [:]
for _ in 1...count {
    let s = try await squares.get(as: Square.self)
    total += s.square
    byWorker[s.worker, default: 0] += 1
}
try await numbers.join()
for w in workers { _ = await w.wait() }
print("sum of the squares of 1...\(count): \(total)")
print("workers: \(byWorker.count), items: \(byWorker.values.reduce(0, +))")
