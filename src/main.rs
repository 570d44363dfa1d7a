//! The `llmtool` binary: everything is in the library's command layer.

fn main() -> std::process::ExitCode {
    llmtool::cli::main()
}
