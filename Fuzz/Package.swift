// swift-tools-version:6.0
// The fuzz targets (scripts/fuzz builds and runs them). A package of its own,
// so that jobrun's package needs no sanitizer or entry-point flags: this one
// is always the root when it is built, so its unsafeFlags are allowed.
// Sources/{CLua,CJobrunShims,CJobrunEntry,JobrunCore}, Plugins and JobrunCLI/Jobrun.swift are
// links to jobrun's own sources (a path dependency on jobrun would be named
// after the checkout's folder); their targets below mirror ../Package.swift,
// so a change to those targets there (a resource, a dependency) is made here too.
// The sanitizers are set per target below, not with -Xswiftc, so that the
// build tool that embeds the preludes (EmbedLuaTool) is a plain program.
import PackageDescription

let sanitize = ["-sanitize=fuzzer,address"]

let package = Package(
    name: "jobrun-fuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
    ],
    targets: [
        .systemLibrary(name: "CLua", pkgConfig: "lua5.4", providers: [.apt(["liblua5.4-dev"])]),
        .target(name: "CJobrunShims", dependencies: ["CLua"],
                cSettings: [.unsafeFlags(["-fsanitize=fuzzer-no-link,address"])]),
        .target(name: "CJobrunEntry", cSettings: [.unsafeFlags(["-fsanitize=fuzzer-no-link,address"])]),
        .target(name: "JobrunCore",
                dependencies: ["CLua", "CJobrunShims", "CJobrunEntry", .product(name: "SystemPackage", package: "swift-system"),
                               .product(name: "Atomics", package: "swift-atomics")],
                swiftSettings: [.swiftLanguageMode(.v5), .unsafeFlags(["-enable-testing"] + sanitize)],
                plugins: ["EmbedLua"]),
        // The fuzzed script's instruction budget (a C count hook).
        .target(name: "FuzzShims", dependencies: ["CLua"],
                cSettings: [.unsafeFlags(["-fsanitize=fuzzer-no-link,address"])]),
        .executableTarget(name: "EmbedLuaTool", path: "Plugins/EmbedLuaTool"),
        .plugin(name: "EmbedLua", capability: .buildTool(), dependencies: ["EmbedLuaTool"]),
        // The command line (Sources/jobrun/Jobrun.swift, linked here), its
        // @main renamed so that libFuzzer's main is the program's.
        .target(
            name: "JobrunCLI",
            dependencies: [
                "JobrunCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [
                .swiftLanguageMode(.v5),
                .unsafeFlags(["-enable-testing", "-Xfrontend", "-entry-point-function-name", "-Xfrontend", "jobrun_cli_main"] + sanitize),
            ]
        ),
        .executableTarget(
            name: "jobrun-fuzz",
            dependencies: [
                "JobrunCLI", "JobrunCore", "CLua", "CJobrunShims", "FuzzShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/FuzzTargets",
            swiftSettings: [.swiftLanguageMode(.v5), .unsafeFlags(["-parse-as-library"] + sanitize)],
            linkerSettings: [.unsafeFlags(sanitize)]
        ),
    ]
)
