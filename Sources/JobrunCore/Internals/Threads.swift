import Glibc

/// jobrun's own threads: the host runtime's reaper and waiter, a plug-in
/// pool's, the monitor's repairs. Only processes that never fork start
/// them (a host, the monitor): the command's processes stay thread-free.
package enum Threads {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Runs `body` on a new thread (joinable unless `detached`); `body`
    /// keeps what it captures alive until it returns.
    @discardableResult
    package static func start(detached: Bool = false, stackSize: Int? = nil,
                              _ body: @escaping () -> Void) throws(JobrunError) -> pthread_t {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        if detached { pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED)) }
        if let stackSize { pthread_attr_setstacksize(&attr, stackSize) }
        let arg = Unmanaged.passRetained(Body(body)).toOpaque()
        var t = pthread_t()
        let r = pthread_create(&t, &attr, { arg in
            Unmanaged<Body>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, arg)
        if r != 0 {
            Unmanaged<Body>.fromOpaque(arg).release()
            throw JobrunError(call: "pthread_create", errno: r)
        }
        return t
    }
}
