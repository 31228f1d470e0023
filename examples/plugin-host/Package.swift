// swift-tools-version:6.0
import PackageDescription

// A text tool whose features are Lua plug-ins, each run isolated in a
// jobrun worker process. In this repository it depends on the package two
// folders up; a program of yours says instead
//
//     .package(url: "https://github.com/<owner>/jobrun", from: "0.14.0")
let package = Package(
    name: "plugin-host",
    dependencies: [
        .package(name: "jobrun", path: "../.."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "plugin-host",
            dependencies: [
                .product(name: "Jobrun", package: "jobrun"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
    ]
)
