use std::path::PathBuf;
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
enum Cmd {
    /// Run the data plane over a capture and write the frames it would transmit.
    Replay {
        /// Configuration file (the embedded default when absent).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Capture to replay (pcap).
        input: PathBuf,
        /// Where to write the transmitted frames (pcap).
        output: PathBuf,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<xvs::config::Config, ExitCode> {
    match path {
        Some(p) => xvs::config::load(p).map_err(|e| {
            eprint!("{e}");
            ExitCode::from(1)
        }),
        None => Ok(xvs::config::default_config()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Replay { config, input, output } => {
            let cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match xvs::replay::replay(&cfg, &input, &output) {
                Ok(summary) => {
                    print!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xvs replay: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
