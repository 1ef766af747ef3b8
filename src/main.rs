use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// xvs: a Linux Virtual Server director in user space.
#[derive(Parser)]
#[command(name = "xvs", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
