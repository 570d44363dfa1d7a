//! `llmtool completions SHELL`: the shell's completion script for every
//! command and flag, generated from the argument definitions by
//! clap_complete, on standard output.

use anyhow::Result;
use clap::CommandFactory;

use super::output;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
///
/// The script is generated from llmtool's own argument definitions, so it
/// always matches this version. Save it where the shell looks for
/// completions (examples below) and start a new shell.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool completions bash > ~/.local/share/bash-completion/completions/llmtool\n  \
    llmtool completions zsh > ~/.zfunc/_llmtool     # with fpath+=(~/.zfunc) before compinit in ~/.zshrc\n  \
    llmtool completions fish > ~/.config/fish/completions/llmtool.fish")]
pub struct Args {
    /// The shell to complete in.
    shell: clap_complete::Shell,
}

pub fn run(a: Args) -> Result<()> {
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "llmtool", &mut script);
    output::print(&String::from_utf8(script)?)
}
