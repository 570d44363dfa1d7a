//! `llmtool man [COMMAND...]`: the roff manual page of llmtool or of one of
//! its commands, generated from the argument definitions by clap_mangen, on
//! standard output.

use anyhow::{bail, Result};
use clap::CommandFactory;

use super::output;

/// Print the manual page (roff) of llmtool or of one of its commands.
///
/// The page is generated from llmtool's own argument definitions, so it
/// always matches this version. `llmtool man` is llmtool(1), which lists
/// the commands; `llmtool man lora merge` is llmtool-lora-merge(1). Read one
/// with `llmtool man | man -l -`, or save it under a man1 directory.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool man | man -l -\n  \
    llmtool man quantize > ~/.local/share/man/man1/llmtool-quantize.1\n  \
    llmtool man lora merge | man -l -")]
pub struct Args {
    /// The command whose page to print (e.g. `quantize`, `lora merge`); none for llmtool(1).
    command: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    // Building names every subcommand's page "llmtool-<command>".
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    for (i, name) in a.command.iter().enumerate() {
        let Some(sub) = cmd.find_subcommand(name) else {
            let known: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
            bail!(
                "no command 'llmtool {}'; the commands there are: {}",
                a.command[..=i].join(" "),
                known.join(", ")
            );
        };
        cmd = sub.clone();
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("llmtool {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)?;
    output::print(&String::from_utf8(page)?)
}
