//! The `cgtproxy` command line.

use std::process::ExitCode;

use clap::Parser;

use cgtproxy::cli::{CheckWhat, Cli, Command};
use cgtproxy::config::{self, Config};
use cgtproxy::daemon::{self, ConfigSource};
use cgtproxy::ruleset::Ruleset;
use cgtproxy::{cgroup, check, exec, inspect, state};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level: tracing::Level = cli.log_level.parse().unwrap_or_else(|_| {
        eprintln!("cgtproxy: invalid --log-level {:?}; using info", cli.log_level);
        tracing::Level::INFO
    });
    cgtproxy::logging::init(level);
    let source =
        ConfigSource { explicit: cli.config.is_some(), path: cli.config.clone().unwrap_or_else(config::default_path) };
    let opts = daemon::Options { keep_on_exit: cli.keep_on_exit };
    match run(cli.command, &source, opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cgtproxy: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Option<Command>, source: &ConfigSource, opts: daemon::Options) -> anyhow::Result<ExitCode> {
    match command {
        None => daemon::run(source.clone(), opts)?,
        Some(Command::Cleanup { unit }) => {
            if let Some(unit) = unit
                && let Some(why) = cleanup_unwanted(&unit)
            {
                println!("{unit} {why}: leaving table inet cgtproxy and its routing in place");
                return Ok(ExitCode::SUCCESS);
            }
            // A broken config must not keep the table: remove it anyway and
            // say which routing could not be identified.
            let cfg = source.load().unwrap_or_else(|e| {
                eprintln!("cgtproxy: warning: {e}; removing the table and the default config's routing only");
                config::Config::builtin_default()
            });
            match daemon::cleanup(&cfg)? {
                true => println!("removed table inet cgtproxy and its routing"),
                false => println!("no table inet cgtproxy; routing of the config removed if present"),
            }
        }
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
        Some(Command::Print { diff: false }) => {
            let cfg = source.load()?;
            print!("{}", render_now(&cfg)?);
        }
        Some(Command::Print { diff: true }) => {
            let cfg = source.load()?;
            if let Some(d) = inspect::diff(&cfg)? {
                print!("{d}");
                return Ok(ExitCode::from(1));
            }
        }
        Some(Command::Status { json }) => {
            let cfg = source.load()?;
            let status = inspect::status(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.text(&cfg));
            }
        }
        Some(Command::Explain { target, from, iif }) => {
            let cfg = source.load()?;
            match (target, from) {
                (_, Some(from)) => print!("{}", inspect::explain_gateway(&cfg, from, iif.as_deref())?),
                (Some(target), None) => print!("{}", inspect::explain(&cfg, &target)?),
                (None, None) => anyhow::bail!("explain needs a cgroup path, a PID, or --from ADDR"),
            }
        }
        Some(Command::Reload) => {
            let Some(s) = state::read() else {
                anyhow::bail!("no running daemon found (state file {})", state::path().display());
            };
            // SAFETY: sending SIGHUP to a pid we read; kill has no memory effects.
            if unsafe { libc::kill(s.pid as i32, libc::SIGHUP) } != 0 {
                anyhow::bail!("cannot signal pid {}: {}", s.pid, std::io::Error::last_os_error());
            }
            println!("reload requested (pid {}); see the daemon's log for the result", s.pid);
        }
        Some(Command::Exec { target, dry_run, command }) => {
            if dry_run {
                println!("{}", exec::command_line(&target, &command)?.join(" "));
            } else {
                exec::exec(&target, &command)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a stop of `unit` must keep the rules (fail closed), if it must:
/// the service failed (systemd restarts it per Restart=, or a person should
/// look; the rules stay) or the stop is part of a restart.
fn cleanup_unwanted(unit: &str) -> Option<String> {
    if let Ok(result) = std::env::var("SERVICE_RESULT")
        && result != "success"
    {
        return Some(format!("failed ({result})"));
    }
    // `systemctl list-jobs UNIT`: JOB UNIT TYPE STATE. While ExecStopPost
    // runs for `systemctl restart` (and a package upgrade's), the job is
    // still "restart"; for `systemctl stop` it is "stop".
    let out = match std::process::Command::new("systemctl").args(["list-jobs", "--no-legend", "--full", unit]).output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => return Some(format!("state unknown (systemctl: {})", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => return Some(format!("state unknown (systemctl: {e})")),
    };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1] == unit).then(|| f[2].to_owned())
        })
        .find(|ty| ty.contains("start") || ty.contains("restart") || ty == "reload")
        .map(|ty| format!("is restarting (job {ty})"))
}

fn render_now(cfg: &Config) -> anyhow::Result<String> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let cgroups = cgroup::scan(&root).map_err(|e| anyhow::anyhow!("scanning cgroups below {}: {e}", root.display()))?;
    let rs = Ruleset::build(cfg, &cgroups);
    Ok(rs.render_for_nft(&root, &cgroups).unwrap_or_else(|| {
        format!(
            "# cgroup2 is mounted at {}, not below /sys/fs/cgroup, where nft looks up cgroupsv2 elements:\n\
             # `nft -f` cannot load the paths below (the daemon programs cgroup ids and is not affected).\n{}",
            root.display(),
            rs.render(&cgroups)
        )
    }))
}
