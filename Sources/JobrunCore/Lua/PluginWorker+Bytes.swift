// PluginWorker on bytes where they lie, under Lua/ for the raw pointer.
extension PluginWorker {
    /// As `handle(_:)`, on a request read in place (a queue item in a
    /// scratch buffer): no copy into an array first. The bytes need to stay
    /// valid only during the call.
    package func handle(bytes request: UnsafeRawBufferPointer) -> [UInt8] {
        state.handle(request, check: checkNow())
    }
}
