//! `llmtool fragment`: one model over several hosts.

use anyhow::Result;

use super::fragment_plan;

/// Split a model across hosts: plan where each layer goes.
#[derive(clap::Subcommand)]
pub enum Command {
    Plan(fragment_plan::Args),
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Plan(a) => fragment_plan::run(a),
    }
}
