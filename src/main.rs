//! The `cgtproxy` command line.

use std::process::ExitCode;

use clap::Parser;

use cgtproxy::cgroup;
use cgtproxy::cli::{CheckWhat, Cli, Command};
use cgtproxy::cmd::{check, cleanup, exec, explain, explain_gateway, print, reload, status, top};
use cgtproxy::config;
use cgtproxy::daemon::{self, ConfigSource};

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
            // A broken config must not keep the table: remove it anyway and
            // say which routing could not be identified.
            let cfg = source.load().unwrap_or_else(|e| {
                eprintln!("cgtproxy: warning: {e}; removing the table and the default config's routing only");
                config::Config::builtin_default()
            });
            print!("{}", cleanup::render(&cleanup::run(&cfg, unit.as_deref())?));
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
        Some(Command::Print { diff: false }) => print!("{}", print::render_now(&source.load()?)?),
        Some(Command::Print { diff: true }) => {
            if let Some(d) = print::diff(&source.load()?)? {
                print!("{d}");
                return Ok(ExitCode::from(1));
            }
        }
        Some(Command::Status { json }) => {
            let cfg = source.load()?;
            let status = status::read(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.text(&cfg));
            }
        }
        Some(Command::Explain { target, from, iif }) => {
            let cfg = source.load()?;
            match (target, from) {
                (_, Some(from)) => {
                    let kernel = explain_gateway::read(&cfg)?;
                    print!("{}", explain_gateway::render(&cfg, from, iif.as_deref(), &kernel));
                }
                (Some(target), None) => print!("{}", explain::render(&cfg, &explain::read(&cfg, &target)?)),
                (None, None) => anyhow::bail!("explain needs a cgroup path, a PID, or --from ADDR"),
            }
        }
        Some(Command::Top { once, json, interval }) => {
            let cfg = source.load()?;
            let interval = top::interval(interval);
            match (once, json) {
                (true, true) => println!("{}", serde_json::to_string_pretty(&top::once(&cfg, interval)?)?),
                (true, false) => print!("{}", top::text(&top::once(&cfg, interval)?, 160, 40)),
                (false, _) => top::run(&cfg, interval)?,
            }
        }
        Some(Command::Reload) => print!("{}", reload::render(reload::run()?)),
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
