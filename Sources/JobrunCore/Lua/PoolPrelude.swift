/// `jobrun.Pool`, written in Lua on Process and Queue. Runs after the main
/// prelude with `(jobrun, core, ErrorMeta)`.
enum PoolPrelude {
    static let source = #"""
local jobrun, core, ErrorMeta = ...
"""#
}
