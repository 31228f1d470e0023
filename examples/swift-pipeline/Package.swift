// swift-tools-version:6.0
import PackageDescription

// A Swift program that feeds a Lua pipeline through jobrun's queues and
// collects its results. In this repository it depends on the package two
// folders up; a program of yours says instead
//
//     .package(url: "https://github.com/<owner>/jobrun", from: "0.14.0")
//
// (Tests/JobrunTests/VersionedDependencyTests.swift builds it exactly so,
// against a tagged copy of the repository.)
let package = Package(
    name: "swift-pipeline",
    dependencies: [
        .package(name: "jobrun", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "swift-pipeline",
            dependencies: [.product(name: "Jobrun", package: "jobrun")]
        ),
    ]
)
