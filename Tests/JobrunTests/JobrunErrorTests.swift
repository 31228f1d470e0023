import Testing
import Jobrun

/// The library's one error type: codes are values that compare, hash and
/// switch; the description names the call and the worker.
@Suite struct JobrunErrorTests {
    static let codes: [JobrunError.Code] = [
        .pluginNotFound, .pluginNotReadable, .syntaxError, .notATable, .functionMissing, .luaError,
        .unsendableResult, .limitExceeded, .timedOut, .workerDied, .hostShutDown, .cancelled, .badValue, .deadlock,
        .closed, .tooManyTaskDone, .startFailed, .runtimeUnavailable, .systemError,
    ]

    @Test func codesCompareHashAndSwitch() {
        #expect(Set(Self.codes).count == Self.codes.count, "every code is distinct")
        #expect(Set(Self.codes.map(\.description)).count == Self.codes.count, "and so is its name")
        #expect(JobrunError.Code.timedOut == .timedOut && JobrunError.Code.timedOut != .workerDied)
        func retry(_ code: JobrunError.Code) -> Bool {
            switch code {
            case .timedOut, .workerDied: true
            default: false   // Code is a struct: new codes never break this switch
            }
        }
        #expect(Self.codes.filter(retry) == [.timedOut, .workerDied])
        #expect(JobrunError(.closed, "x") == JobrunError(.closed, "x"))
        #expect(JobrunError(.closed, "x") != JobrunError(.deadlock, "x"))
    }

    @Test func theDescriptionNamesTheCallAndTheWorker() {
        let e = JobrunError(.luaError, "plugins/t.lua:3: boom", plugin: "t", function: "resize",
                            worker: .init(pid: 123, name: "plugin-1"), traceback: "stack traceback:\n\tplugins/t.lua:3: in function 't.resize'")
        #expect(e.description == "t.resize: luaError: plugins/t.lua:3: boom [plugin-1 (pid 123)]\nstack traceback:\n\tplugins/t.lua:3: in function 't.resize'")
        #expect(JobrunError(.tooManyTaskDone, "task_done() called more times than items were put").description
                == "tooManyTaskDone: task_done() called more times than items were put")
    }
}
