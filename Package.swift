// swift-tools-version:6.0
import PackageDescription

/// Linked by every product that embeds Lua (the command, the Swift library,
/// test executables); never by the Lua C module (jobrun-lua).
///
/// Debian's shared liblua5.4, not its faster static liblua5.4.a: it is the one
/// choice here that keeps Lua C modules (`require` of a luarocks module,
/// package.loadlib) working in every build, because the .so exports the API.
/// `.linkedLibrary(":liblua5.4.a")` links (SwiftPM passes `-l:liblua5.4.a`
/// through), but no build would export lua_*/luaL_*/luaopen_* for C modules:
/// SwiftPM links an executable without `--export-dynamic`, and with
/// `--static-swift-stdlib` the driver adds `-export-dynamic --exclude-libs
/// ALL`, under which gold makes every symbol taken from an archive hidden
/// (not even a `--dynamic-list` exports it). Only unsafeFlags could change
/// that. The release build of the jobrun command links the static core as one
/// relocatable object instead, from scripts/setup (docs/performance.md,
/// "Issue 15"). A Swift app using the Jobrun library gets liblua5.4.so too: one
/// Lua core, the same one if the app links liblua5.4 itself, with the API
/// exported for its plug-ins' C modules.
let linksLua: [LinkerSetting] = [.linkedLibrary("lua5.4")]

let package = Package(
    name: "jobrun",
    products: [
        .executable(name: "jobrun", targets: ["jobrun"]),
        .library(name: "JobrunCore", targets: ["JobrunCore"]),
        // The library for Swift hosts: LuaValue and its Codable bridge (more to come: issue 14).
        .library(name: "Jobrun", targets: ["Jobrun"]),
        // The Lua C module: `require "jobrun"` from lua5.4 (scripts/build-module
        // copies libjobrun-lua.so to jobrun.so).
        .library(name: "jobrun-lua", type: .dynamic, targets: ["JobrunLuaModule"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
    ],
    targets: [
        // Lua's headers, without its library (see Sources/CLua/shim.h): what
        // embeds Lua links liblua5.4 itself (`linksLua`); the Lua C module
        // takes lua_* from the interpreter that loads it.
        .systemLibrary(name: "CLua"),
        .target(
            name: "CJobrunShims",
            dependencies: ["CLua"]
        ),
        // The re-entry constructor (Process/Reentry.swift): a Swift host's
        // workers and monitor are its own executable started again.
        .target(name: "CJobrunEntry"),
        // No unsafeFlags: a library product must build without them. The
        // per-item path reaches its buffers through the process context
        // (ProcessContext.hot, behind a pointer), so it needs no exclusivity
        // switch to be fast.
        .target(
            name: "JobrunCore",
            dependencies: [
                "CLua", "CJobrunShims", "CJobrunEntry",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            plugins: ["EmbedLua"]   // prelude/*.lua, embedded at build time
        ),
        // The public Swift library (Swift 6 language mode, as the tools version
        // sets it). Reaches JobrunCore through `package` declarations only.
        .target(
            name: "Jobrun",
            dependencies: ["JobrunCore"],
            linkerSettings: linksLua
        ),
        // luaopen_jobrun: JobrunCore's module in a foreign lua_State.
        .target(
            name: "JobrunLuaModule",
            dependencies: ["JobrunCore"]
        ),
        .executableTarget(name: "EmbedLuaTool", path: "Plugins/EmbedLuaTool"),
        .plugin(name: "EmbedLua", capability: .buildTool(), dependencies: ["EmbedLuaTool"]),
        .executableTarget(
            name: "jobrun",
            dependencies: [
                "JobrunCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            linkerSettings: linksLua
            // The release binary is linked with -z now by scripts/setup, not
            // here: SwiftPM refuses a versioned dependency on a package whose
            // targets carry unsafeFlags.
        ),
        // A plain executable hosting a jobrun runtime, for the runtime's
        // tests (re-entry from an ordinary executable; a SIGKILLed host).
        .executableTarget(
            name: "jobrun-test-host",
            dependencies: ["JobrunCore", "Jobrun"],
            linkerSettings: linksLua
        ),
        // The plug-in rows of scripts/bench: a Swift host with a PluginHost
        // (built in release mode by scripts/setup release).
        .executableTarget(
            name: "jobrun-plugin-bench",
            dependencies: ["Jobrun", "CLua"],
            linkerSettings: linksLua
        ),
        .testTarget(
            name: "JobrunCoreTests",
            dependencies: [
                "JobrunCore", "CLua", "CJobrunShims",
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            linkerSettings: linksLua
        ),
        .testTarget(
            name: "JobrunTests",
            dependencies: ["Jobrun", "JobrunCore", "CLua", "CJobrunShims"],
            linkerSettings: linksLua
        ),
        .testTarget(
            name: "JobrunEndToEndTests",
            dependencies: []
        ),
    ]
)
