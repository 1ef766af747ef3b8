use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xvs::lab::{self, client, netns::Netns, serve};

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
        /// Benchmark baseline: the same packet I/O with no data plane, every stolen frame sent out
        /// of the other interface to this MAC.
        #[arg(long, value_name = "MAC", hide = true)]
        bare_forward: Option<xvs::types::Mac>,
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
    /// Run only VRRP (root), like `keepalived -P`, until SIGINT/SIGTERM (then priority 0 is sent).
    Vrrp {
        /// Configuration file with [[vrrp_instance]] sections.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Talk to a running director, in ipvsadm's words: `-L -n`, `-L -n --stats`, `-L -n --rate`,
    /// `-L -n -c`, `-Z`, `-A/-E/-D`, `-a/-e/-d`, and `counters`, `health`, `vrrp`, `reload`, `save`.
    Ctl {
        /// The director's admin socket ([global] admin_socket).
        #[arg(long, default_value = xvs::config::DEFAULT_ADMIN_SOCKET)]
        socket: PathBuf,
        /// The command, passed to the director as it is.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from this command line's definition.
    Man,
    /// Convert a keepalived.conf (and its include files) to xvs TOML; warnings name every option
    /// that is not carried over.
    ImportKeepalived {
        /// keepalived.conf to convert.
        file: PathBuf,
        /// Write the TOML here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Treat every warning as an error (exit 1, nothing written).
        #[arg(long)]
        strict: bool,
    },
    /// Build, inspect and remove the namespace lab; run its servers and clients.
    #[command(subcommand)]
    Lab(LabCmd),
    /// Prepare this host (namespace) as a DR or TUN real server, or undo it.
    #[command(subcommand)]
    Realserver(RsCmd),
    /// Send benchmark traffic from inside the kernel (root): BPF_PROG_TEST_RUN with live frames,
    /// XDP_TX out of --dev. Prints `sent=N secs=S mpps=M`. While it runs, its XDP program is
    /// also attached to the namespace's loopback (generic mode, passing everything) to keep test
    /// runs quick to start; loopback traffic pays the generic XDP hook meanwhile, so run it in a
    /// lab namespace rather than beside busy loopback services.
    Gen(xvs::perf::GenArgs),
    /// Count and drop benchmark traffic arriving on an interface (root), with one-way latency from
    /// the generator's timestamps. Prints packets, Mpps and latency p50/p99.
    Sink {
        /// Interface to count on (in the current namespace).
        #[arg(long)]
        dev: String,
        /// Seconds to count for (SIGINT or SIGTERM ends the window early).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Hook: tc ingress (behind forwarders that emit skbs) or native XDP (behind XDP_REDIRECT).
        #[arg(long, value_enum, default_value_t = xvs::perf::sink::SinkHook::Tc)]
        hook: xvs::perf::sink::SinkHook,
    },
}

#[derive(Args)]
struct Prefix {
    /// Namespace name prefix.
    #[arg(long, default_value = "xvs")]
    prefix: String,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab and start its servers.
    Up {
        #[command(flatten)]
        p: Prefix,
        /// RX/TX queues per veth.
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// Two directors (PREFIX-lb and PREFIX-lb2) behind floating gateways 198.18.1.254 and
        /// 198.18.2.254, for VRRP (IPv4 only).
        #[arg(long)]
        ha: bool,
    },
    /// Remove the lab's namespaces and everything running in them.
    Down {
        #[command(flatten)]
        p: Prefix,
    },
    /// List the lab's namespaces, addresses and servers.
    Status {
        #[command(flatten)]
        p: Prefix,
    },
    /// Run the HTTP and UDP echo servers (started in each real server by `lab up`).
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 80)]
        http_port: u16,
        #[arg(long, default_value_t = 7)]
        udp_port: u16,
        /// Also serve HTTP over TLS on this port, with a certificate for "xvs-lab" from a new CA.
        #[arg(long)]
        https_port: Option<u16>,
        /// Write that CA's certificate (PEM) here, for clients that verify.
        #[arg(long)]
        ca_out: Option<std::path::PathBuf>,
    },
    /// Send test traffic from the lab's client namespace and print per-server counts.
    Client {
        #[command(flatten)]
        p: Prefix,
        #[command(subcommand)]
        what: ClientCmd,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// N GETs, each on a new connection.
    Http {
        addr: SocketAddr,
        #[arg(short, default_value_t = 10)]
        n: usize,
    },
    /// N GETs on one connection, all answered by one server.
    Rounds {
        addr: SocketAddr,
        #[arg(short, default_value_t = 1000)]
        n: usize,
    },
    /// One GET of N bytes, checked byte for byte.
    Bytes {
        addr: SocketAddr,
        #[arg(short, default_value_t = 1 << 20)]
        n: usize,
    },
    /// N UDP echoes, each from a new source port.
    Udp {
        addr: SocketAddr,
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// Bytes per datagram (past the MTU, 1500 in the lab, they travel in fragments).
        #[arg(long, default_value_t = 0)]
        size: usize,
    },
    /// One ICMP echo.
    Ping { addr: IpAddr },
}

#[derive(Subcommand)]
enum RsCmd {
    /// VIPs on lo and the ARP sysctls.
    Dr {
        #[arg(long, num_args = 1.., required = true)]
        vip: Vec<IpAddr>,
    },
    /// As dr, plus IP-in-IP decapsulation (IPv4 or IPv6 outer header) on DEV's ingress.
    Tun {
        #[arg(long, num_args = 1.., required = true)]
        vip: Vec<IpAddr>,
        #[arg(long)]
        dev: String,
    },
    /// Undo dr or tun.
    Clear {
        #[arg(long, num_args = 1..)]
        vip: Vec<IpAddr>,
        #[arg(long)]
        dev: Option<String>,
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

fn run(cmd: Cmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Check { .. } | Cmd::Run { .. } | Cmd::Replay { .. } | Cmd::ImportKeepalived { .. } => {
            unreachable!("handled in main")
        }
        Cmd::Vrrp { config } => xvs::vrrp::run_standalone(&config)?,
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "xvs", &mut std::io::stdout());
        }
        Cmd::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
        Cmd::Ctl { socket, args } => {
            let reply = xvs::ctl::request(&socket, &args)?;
            if reply.code == 0 {
                print!("{}", reply.text);
            } else {
                eprint!("{}", reply.text);
            }
            std::process::exit(reply.code);
        }
        Cmd::Lab(LabCmd::Up { p, queues, ha }) => {
            let opts = lab::LabOpts {
                prefix: p.prefix,
                queues,
                serve_exe: Some(std::env::current_exe()?),
                ha,
            };
            let lab = lab::Lab::up(&opts, &mut |_| {})?;
            print!("{}", lab::describe(&lab));
            lab.keep();
        }
        Cmd::Lab(LabCmd::Down { p }) => {
            for n in lab::down(&p.prefix)? {
                println!("removed {n}");
            }
        }
        Cmd::Lab(LabCmd::Status { p }) => print!("{}", lab::status(&p.prefix)),
        Cmd::Lab(LabCmd::Serve {
            name,
            http_port,
            udp_port,
            https_port,
            ca_out,
        }) => serve::serve(&serve::ServeOpts {
            name,
            http_port,
            udp_port,
            https_port,
            ca_out,
        })?,
        Cmd::Lab(LabCmd::Client { p, what }) => {
            let ns = Netns::existing(&format!("{}-cli", p.prefix));
            match what {
                ClientCmd::Http { addr, n } => print_counts(&client::http_counts(&ns, addr, n)?),
                ClientCmd::Udp { addr, n, size } => print_counts(&client::udp_sized(&ns, addr, n, size)?),
                ClientCmd::Rounds { addr, n } => {
                    println!("{} {n}", client::http_rounds(&ns, addr, n)?)
                }
                ClientCmd::Bytes { addr, n } => {
                    println!("verified {} bytes", client::http_bytes(&ns, addr, n)?)
                }
                ClientCmd::Ping { addr } => println!("reply in {:?}", client::ping(&ns, addr)?),
            }
        }
        Cmd::Gen(args) => println!("{}", xvs::perf::generate(&args)?.line()),
        Cmd::Sink { dev, duration, hook } => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            let r = xvs::perf::sink::run(&dev, hook, duration, &|| {
                stop.load(std::sync::atomic::Ordering::Relaxed)
            })?;
            println!("{}", r.line());
        }
        Cmd::Realserver(RsCmd::Dr { vip }) => xvs::realserver::dr(&vip)?,
        Cmd::Realserver(RsCmd::Tun { vip, dev }) => xvs::realserver::tun(&vip, &dev)?,
        Cmd::Realserver(RsCmd::Clear { vip, dev }) => xvs::realserver::clear(&vip, dev.as_deref())?,
    }
    Ok(())
}

fn print_counts(c: &client::Counts) {
    for (name, n) in c {
        println!("{name} {n}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `xvs vrrp` logs every transition (info) by default.
    let default_level = if matches!(cli.cmd, Cmd::Vrrp { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Check { config } => check(config.as_deref()),
        Cmd::ImportKeepalived { file, output, strict } => import_keepalived(&file, output.as_deref(), strict),
        Cmd::Run {
            config,
            stats,
            bare_forward,
        } => {
            let opts = xvs::run::RunOptions {
                config,
                stats_every: stats.map(std::time::Duration::from_secs),
                bare_forward,
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
        other => match run(other) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xvs: {e}");
                ExitCode::FAILURE
            }
        },
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

/// `xvs import-keepalived`: TOML on stdout (or `-o`), warnings on stderr. Exit 0 when converted;
/// 1 when the file cannot be read or parsed, when xvs would refuse the result, or with `--strict`
/// when anything was not carried over.
fn import_keepalived(file: &std::path::Path, output: Option<&std::path::Path>, strict: bool) -> ExitCode {
    let conv = match xvs::import::convert_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xvs import-keepalived: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &conv.warnings {
        eprintln!("warning: {w}");
    }
    if strict && !conv.warnings.is_empty() {
        eprintln!(
            "xvs import-keepalived: {} warning(s) and --strict: nothing written",
            conv.warnings.len()
        );
        return ExitCode::from(1);
    }
    let written = match output {
        Some(p) => std::fs::write(p, &conv.toml).map_err(|e| format!("cannot write {}: {e}", p.display())),
        None => {
            print!("{}", conv.toml);
            Ok(())
        }
    };
    if let Err(e) = written {
        eprintln!("xvs import-keepalived: {e}");
        return ExitCode::from(1);
    }
    if !conv.refused.is_empty() {
        for e in &conv.refused {
            eprintln!("error: {e}");
        }
        eprintln!(
            "xvs import-keepalived: the converted configuration is refused by xvs check ({} error(s)): edit it",
            conv.refused.len()
        );
        return ExitCode::from(1);
    }
    eprintln!(
        "xvs import-keepalived: converted with {} warning(s)",
        conv.warnings.len()
    );
    ExitCode::SUCCESS
}
