//! The command line: one module per command, each mapping its arguments
//! (clap) to the library's options, calling one operation in
//! [`crate::ops`] and rendering its report through `output`. Argument
//! groups several commands share live in `args`.
//!
//! Exit codes: 0 success, 1 error (for `run`: a step failed), 2 usage
//! (clap), 3 `vram-plan` found nothing that fits, 130 interrupted (Ctrl-C or SIGTERM; see
//! [`crate::cancel`]).
//!
//! Adding a command: a `cli/<command>.rs` with its `Args` and `run`, its
//! operation under `ops/`, one variant in `Command` and its line in
//! `run`; nothing else changes.

mod args;
mod bench;
mod completions;
mod convert;
mod eval;
mod fragment;
mod fragment_plan;
mod generate;
mod inspect_arch;
mod lora;
mod man;
mod output;
mod push;
mod quantize;
mod remote;
mod run;
mod vram_plan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cancel;

/// From fine-tuned adapter to deployed artifact.
#[derive(Parser)]
#[command(name = "llmtool", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    InspectArch(inspect_arch::Args),
    Convert(convert::Args),
    Quantize(quantize::Args),
    #[command(subcommand)]
    Lora(lora::Command),
    VramPlan(vram_plan::Args),
    Generate(generate::Args),
    #[command(subcommand)]
    Eval(eval::Command),
    Push(push::Args),
    Run(run::Args),
    #[command(subcommand)]
    Fragment(fragment::Command),
    #[command(subcommand)]
    Bench(bench::Command),
    Completions(completions::Args),
    Man(man::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::InspectArch(a) => inspect_arch::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Lora(c) => lora::run(c),
        Command::VramPlan(a) => vram_plan::run(a),
        Command::Push(a) => push::run(a),
        Command::Run(a) => run::run(a),
        Command::Fragment(c) => fragment::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Generate(a) => generate::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}

/// Exit status of a failed run.
const EXIT_ERROR: u8 = 1;
/// Exit status of a `vram-plan` whose report shows nothing that fits.
const EXIT_NOTHING_FITS: u8 = 3;
/// Exit status of a `bench compare --baseline` that found a regression.
const EXIT_REGRESSION: u8 = 4;

/// Parses the arguments, runs the command, prints an error and picks the
/// exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cancel::install() {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| c.is::<output::BrokenPipe>()) => ExitCode::SUCCESS,
        Err(e) if e.is::<vram_plan::NothingFits>() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_NOTHING_FITS)
        }
        Err(e) if e.is::<bench::Regressed>() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_REGRESSION)
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            if e.chain().any(|c| c.is::<cancel::Interrupted>()) {
                ExitCode::from(cancel::EXIT_INTERRUPTED)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

/// The error chain joined by ": ", each cause once: library errors carry
/// their cause both in their message and as their `source`, so a cause
/// whose text ends the previous message is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if parts.last().is_some_and(|l| l.ends_with(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}
