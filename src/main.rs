//! The `cgtproxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cgtproxy::config::{self, Config};
use cgtproxy::daemon::{self, ConfigSource};
use cgtproxy::ruleset::Ruleset;
use cgtproxy::{cgroup, check};

/// Per-cgroup transparent proxy rules: each cgroup's outgoing traffic goes
/// direct, is dropped, or is sent to a local TPROXY server.
#[derive(Debug, Parser)]
#[command(name = "cgtproxy", version, about, long_about = None)]
struct Cli {
    /// Config file [default: $CONFIGURATION_DIRECTORY/config.yaml or /etc/cgtproxy/config.yaml]
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "CGTPROXY_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and/or whether this process can program the kernel.
    Check {
        #[arg(value_enum)]
        what: Option<CheckWhat>,
    },
    /// Print the nftables ruleset for the cgroups that exist now (nft -f text).
    Print,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CheckWhat {
    Config,
    Permission,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level: tracing::Level = cli.log_level.parse().unwrap_or_else(|_| {
        eprintln!("cgtproxy: invalid --log-level {:?}; using info", cli.log_level);
        tracing::Level::INFO
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let source =
        ConfigSource { explicit: cli.config.is_some(), path: cli.config.clone().unwrap_or_else(config::default_path) };
    match run(cli.command, &source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgtproxy: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Option<Command>, source: &ConfigSource) -> anyhow::Result<()> {
    match command {
        None => daemon::run(source.clone())?,
        Some(Command::Check { what }) => {
            let cfg = source.load()?;
            if matches!(what, None | Some(CheckWhat::Config)) {
                print!("{}", check::describe(&cfg));
                let root = cgroup::resolve_root(&cfg.cgroup_root)?;
                println!("  cgroup root: {}", root.display());
            }
            if matches!(what, None | Some(CheckWhat::Permission)) {
                for line in check::permission(&cfg)? {
                    println!("{line}");
                }
            }
        }
        Some(Command::Print) => {
            let cfg = source.load()?;
            print!("{}", render_now(&cfg)?);
        }
    }
    Ok(())
}

fn render_now(cfg: &Config) -> anyhow::Result<String> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let cgroups = cgroup::scan(&root).map_err(|e| anyhow::anyhow!("scanning cgroups below {}: {e}", root.display()))?;
    Ok(Ruleset::build(cfg, &cgroups).render())
}
