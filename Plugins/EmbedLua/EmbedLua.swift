import Foundation
import PackagePlugin

/// Embeds a target's `.lua` files in its binary: at build time, before the
/// target compiles, `EmbedLuaTool` writes one Swift file holding each file's
/// text (see that tool), and SwiftPM compiles it with the target's own
/// sources. Nothing is generated into the source tree, so a fresh clone
/// builds as it is, and there is no resource bundle to ship beside the
/// binary (a static `jobrun` is one file; a library user links no bundle).
///
/// SwiftPM hands a build-tool plugin every file of the target, including the
/// ones it does not compile itself; the `.lua` files are the command's
/// inputs, so editing one re-runs the tool.
@main
struct EmbedLua: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        // Sorted: the generated file does not change with directory order.
        let inputs = target.sourceFiles(withSuffix: "lua").map(\.url).sorted { $0.path < $1.path }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLua.swift")
        return [.buildCommand(
            displayName: "Embedding \(inputs.count) Lua files in \(target.name)",
            executable: try context.tool(named: "EmbedLuaTool").url,
            arguments: [output.path] + inputs.map(\.path),
            inputFiles: inputs,
            outputFiles: [output]
        )]
    }
}
