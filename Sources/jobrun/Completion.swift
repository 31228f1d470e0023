import ArgumentParser

// Shell completion of the default form. swift-argument-parser writes the
// scripts, but its scripts complete a default subcommand only when it is
// named: `jobrun run <Tab>` offered `.lua` files and run's options,
// `jobrun <Tab>` only the subcommands. Each script is patched here so that
// the words after `jobrun` complete as run's do (and, in the first word,
// the subcommands too). Each patch replaces one known block of the
// generated script; a generator that writes another block leaves the
// script as it was (the tests in CommandLineTests notice).

enum Completion {
    /// The subcommands (run is the default one) and what they do.
    static let subcommands = [("run", "Run a script (the default)"), ("check", "Compile scripts without running them"),
                              ("map", "Call a Lua file's function on each input line"),
                              ("help", "Show subcommand help information")]

    /// The subcommand words, as the generated scripts list them.
    static var names: String { subcommands.map(\.0).joined(separator: " ") }

    /// `jobrun --generate-completion-script SHELL` (or `=SHELL`): the patched
    /// script; nil when the arguments are not that (the parser handles them).
    static func script(arguments: [String]) -> String? {
        guard arguments.count >= 2 else { return nil }
        var shell: String?
        if arguments[1] == "--generate-completion-script", arguments.count == 3 {
            shell = arguments[2]
        } else if arguments.count == 2, arguments[1].hasPrefix("--generate-completion-script=") {
            shell = String(arguments[1].dropFirst("--generate-completion-script=".count))
        }
        guard let name = shell, let kind = CompletionShell(rawValue: name) else { return nil }
        return patch(Jobrun.completionScript(for: kind), for: kind)
    }

    static func patch(_ script: String, for shell: CompletionShell) -> String {
        switch shell {
        case .bash: return bash(script)
        case .zsh: return zsh(script)
        case .fish: return fish(script)
        default: return script
        }
    }

    /// bash: the root's fallback branch (a first word that is no subcommand)
    /// completes as `run`.
    static func bash(_ script: String) -> String {
        let generated = """
                *)
                    # Offer subcommand completions
                    COMPREPLY+=($(compgen -W '\(names)' -- "${cur}"))
                    ;;
            """
        let patched = """
                *)
                    # `run` is the default subcommand (`jobrun [options] script.lua`
                    # is `jobrun run ...`): its options and .lua files, and in the
                    # first word the subcommands too.
                    COMPREPLY=()
                    if [[ "${COMP_CWORD}" -eq 1 && "${cur}" != -* ]]; then
                        COMPREPLY+=($(compgen -W '\(names)' -- "${cur}"))
                    fi
                    unparsed_words=("${COMP_WORDS[@]:1:${COMP_CWORD}}")
                    _jobrun_run
                    ;;
            """
        return script.replacingFirst(generated, with: patched)
    }

    /// zsh: unless the first word is a subcommand (and complete), the words
    /// after `jobrun` are run's.
    static func zsh(_ script: String) -> String {
        let anchor = """
                local -i ret=1
                local -ar arg_specs=(
                    '--version[Show the version.]'
            """
        let names = subcommands.map { "'\($0.0):\($0.1)'" }.joined(separator: " ")
        let patched = """
                # `run` is the default subcommand (`jobrun [options] script.lua` is
                # `jobrun run ...`): unless the first word is a subcommand, the
                # words are run's; in the first word, the subcommands too.
                if (( CURRENT == 2 )) || [[ "${words[2]}" != (\(subcommands.map(\.0).joined(separator: "|"))) ]]; then
                    local -i default_ret=1
                    if (( CURRENT == 2 )) && [[ "${words[CURRENT]}" != -* ]]; then
                        local -a default_subcommands=(\(names))
                        _describe -V subcommand default_subcommands && default_ret=0
                    fi
                    _jobrun_run && default_ret=0
                    return "${default_ret}"
                fi

            """ + anchor
        return script.replacingFirst(anchor, with: patched)
    }

    /// fish: a first word that is no subcommand (nor a root option) is
    /// read as coming after `run`, and the first word offers what `jobrun
    /// run` offers there too.
    static func fish(_ script: String) -> String {
        let anchor = "    set -l unparsed_tokens (__jobrun_tokens -pc)\n"
        guard script.contains(anchor) else { return script }
        let patched = anchor + """
                # `run` is the default subcommand: `jobrun [options] script.lua` is
                # `jobrun run ...`.
                if test (count $unparsed_tokens) -gt 1; and not contains -- $unparsed_tokens[2] \(names) --version -h --help
                    set unparsed_tokens $unparsed_tokens[1] run $unparsed_tokens[2..]
                end

            """
        var out = script.replacingFirst(anchor, with: patched)
        // In the first word: what `jobrun run` offers there (its options and
        // .lua files; the root has --version and --help of its own).
        let runLines = script.lines.filter {
            $0.hasPrefix("complete -c 'jobrun' -n '__jobrun_should_offer_completions_") && $0.contains("\"jobrun run\"")
                && !$0.contains("\"jobrun run\" version'") && !$0.contains("\"jobrun run\" h help'")
        }
        if !out.hasSuffix("\n") { out += "\n" }
        out += "# `jobrun <Tab>` offers what `jobrun run <Tab>` does (run is the default subcommand).\n"
        out += runLines.map { $0.replacingFirst("\"jobrun run\"", with: "\"jobrun\"") }.joined(separator: "\n")
        return out
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        replacing(target, with: replacement, maxReplacements: 1)
    }

    var lines: [String] { split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
}
