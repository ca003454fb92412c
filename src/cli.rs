//! The command line definition (shared with the man page and completion
//! generator, `src/bin/cgtproxy-gen.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Per-cgroup transparent proxy rules: each cgroup's outgoing traffic goes
/// direct, is dropped, or is sent to a local TPROXY server.
#[derive(Debug, Parser)]
#[command(name = "cgtproxy", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $CONFIGURATION_DIRECTORY/config.yaml or /etc/cgtproxy/config.yaml]
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "CGTPROXY_LOG")]
    pub log_level: String,
    /// When the daemon stops, leave its table and routing in force (fail
    /// closed: a restart has no moment without them); `cgtproxy cleanup`
    /// removes them. The systemd unit sets this.
    #[arg(long, env = "CGTPROXY_KEEP_ON_EXIT")]
    pub keep_on_exit: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config and/or whether this process can program the kernel.
    Check {
        #[arg(value_enum)]
        what: Option<CheckWhat>,
    },
    /// Print the nftables ruleset for the cgroups that exist now (nft -f text).
    Print {
        /// Compare with what the kernel holds; exit 1 when they differ.
        #[arg(long)]
        diff: bool,
    },
    /// Show what is live: classified cgroups, targets, routing, the daemon.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Explain which rule matches a cgroup (a path, or a PID's cgroup), or
    /// which gateway entry takes forwarded traffic (--from ADDR --iif IFACE),
    /// and what the kernel holds for it now.
    Explain {
        /// Cgroup path relative to the cgroup root (`/user.slice/...`), an
        /// absolute path below the cgroup mount, or a PID.
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        target: Option<String>,
        /// Gateway mode: the source address of a forwarded packet.
        #[arg(long)]
        from: Option<std::net::IpAddr>,
        /// Gateway mode: the interface the packet arrives on (`br-1234`, `wg0`).
        #[arg(long, requires = "from")]
        iif: Option<String>,
    },
    /// A live view of every app's sockets, traffic and route, refreshed
    /// every second (q quits, / filters, Enter shows an app's connections).
    Top {
        /// Print one sample (two readings --interval apart) and exit.
        #[arg(long)]
        once: bool,
        /// With --once: the sample as JSON (docs/top.md).
        #[arg(long, requires = "once")]
        json: bool,
        /// Seconds between readings.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
    },
    /// Ask the running daemon to re-read its config (SIGHUP).
    Reload,
    /// Remove the table and routing a stopped daemon left (`--keep-on-exit`).
    Cleanup {
        /// Run as ExecStopPost= of this systemd unit: keep everything when
        /// the unit failed ($SERVICE_RESULT) or is restarting (its pending
        /// job), so a restart or upgrade has no unclassified moment.
        #[arg(long, value_name = "UNIT")]
        unit: Option<String>,
    },
    /// Run a command in the user slice `cgtproxy-TARGET.slice` (with
    /// systemd-run --user), so the rules for that slice apply to it.
    Exec {
        /// The slice suffix: `direct`, `drop`, `proxy` in the example config.
        target: String,
        /// Print the systemd-run command instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CheckWhat {
    Config,
    Permission,
}
