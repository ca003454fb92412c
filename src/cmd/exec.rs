//! `cgtproxy exec TARGET -- CMD...`: start a command in the user slice
//! `cgtproxy-TARGET.slice` with systemd-run, so the rules written for that
//! slice apply to it (the README's "run this app proxied/direct/offline").

use std::convert::Infallible;
use std::os::unix::process::CommandExt;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("target {0:?}: use letters, digits, - and _ (it names cgtproxy-TARGET.slice)")]
    BadTarget(String),
    #[error("no command given after --")]
    NoCommand,
    #[error("cannot run systemd-run (is systemd installed and a user session running?): {0}")]
    Spawn(#[source] std::io::Error),
}

/// The systemd-run command line for `target` and `command`.
pub fn command_line(target: &str, command: &[String]) -> Result<Vec<String>, ExecError> {
    if target.is_empty() || !target.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ExecError::BadTarget(target.to_owned()));
    }
    if command.is_empty() {
        return Err(ExecError::NoCommand);
    }
    // A transient scope keeps the terminal and the exit status of the
    // command; --user puts it below user@UID.service, where the example
    // config's cgtproxy-*.slice rules look.
    let mut argv: Vec<String> =
        ["systemd-run", "--user", "--scope", "--quiet", "--collect"].into_iter().map(String::from).collect();
    argv.push(format!("--slice=cgtproxy-{target}.slice"));
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    Ok(argv)
}

/// Replace this process with systemd-run.
pub fn exec(target: &str, command: &[String]) -> Result<Infallible, ExecError> {
    let argv = command_line(target, command)?;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(ExecError::Spawn(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_systemd_run() {
        let argv = command_line("proxy", &["firefox".into(), "--new-window".into()]).unwrap();
        assert_eq!(
            argv.join(" "),
            "systemd-run --user --scope --quiet --collect --slice=cgtproxy-proxy.slice -- firefox --new-window"
        );
        assert!(matches!(command_line("../x", &["a".into()]), Err(ExecError::BadTarget(_))));
        assert!(matches!(command_line("direct", &[]), Err(ExecError::NoCommand)));
    }
}
