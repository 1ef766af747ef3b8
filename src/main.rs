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
    /// Validate a configuration and print the resolved model, or every error.
    Check {
        /// Configuration file (the embedded default when absent).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Run the director (root): workers on the configured interfaces, until SIGINT/SIGTERM.
    Run {
        /// Configuration file (the embedded default when absent). SIGHUP re-reads it.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the counters every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats: Option<u64>,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Check { config } => check(config.as_deref()),
        Cmd::Run { config, stats } => {
            let opts = xvs::run::RunOptions {
                config,
                stats_every: stats.map(std::time::Duration::from_secs),
            };
            match xvs::run::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xvs run: {e}");
                    ExitCode::from(1)
                }
            }
        }
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

/// `xvs check`: exit 0 with the model, 1 with the errors, 2 when the file cannot be read.
fn check(path: Option<&std::path::Path>) -> ExitCode {
    let result = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => xvs::config::parse(&text, &p.display().to_string()),
            Err(e) => {
                eprintln!("xvs check: cannot read {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => {
            println!("# no -c FILE given: checking the embedded default (config/xvs.toml)");
            xvs::config::parse(xvs::config::DEFAULT, "config/xvs.toml (embedded)")
        }
    };
    match result {
        Ok(cfg) => {
            print!("{cfg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            eprintln!("xvs check: {} error(s); configuration refused", e.0.len());
            ExitCode::from(1)
        }
    }
}
