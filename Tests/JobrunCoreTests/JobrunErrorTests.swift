import CJobrunShims
import Glibc
import Testing
@testable import JobrunCore

@Suite("JobrunError: one error type with a code")
struct JobrunErrorTests {
    @Test func aFailedSystemCallKeepsItsErrno() throws {
        let fd = jr_memfd_create("jobrun-test")
        try #require(fd >= 0)
        defer { close(fd) }
        do {
            try retryingEINTR("ftruncate") { ftruncate(fd, -1) }
            Issue.record("a negative length is refused")
        } catch {
            #expect(error.code == .systemCall)
            #expect(error.errno?.rawValue == EINVAL)
            #expect(error.message == "ftruncate: \(String(cString: strerror(EINVAL)))")
            #expect(error.code.kind == .ProcessError, "a script sees a ProcessError")
        }
    }

    @Test func codesMapToTheKindsAScriptSees() {
        let pairs: [(JobrunError.Code, ErrorKind)] = [
            (.empty, .Empty), (.full, .Full), (.closed, .Closed), (.timeout, .Timeout), (.valueError, .ValueError),
            (.typeError, .TypeError), (.endOfFile, .EOF), (.workerDied, .WorkerDied), (.deadlock, .Deadlock),
            (.processError, .ProcessError),
        ]
        for (code, kind) in pairs { #expect(code.kind == kind, "\(code)") }
        #expect(Set(pairs.map(\.1)) == Set(ErrorKind.allCases), "every kind has a code")
        #expect(JobrunError(.full, "x") != JobrunError(.empty, "x"))
    }
}
