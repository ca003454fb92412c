//! `cgtproxy cleanup [--unit UNIT]`: remove the table and routing a stopped
//! daemon left, unless the unit's stop is part of a restart or a failure
//! (fail closed: then the rules stay). [`unwanted`] decides from what
//! systemd says; [`run`] asks it and removes.

use crate::config::Config;
use crate::daemon;

/// What `cleanup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The unit's stop must keep the rules: the unit and why.
    Kept {
        unit: String,
        why: String,
    },
    Removed,
    NoTable,
}

/// Why a stop of `unit` must keep the rules (fail closed), if it must:
/// the service failed (systemd restarts it per Restart=, or a person should
/// look; the rules stay) or the stop is part of a restart. `service_result`
/// is `$SERVICE_RESULT`; `jobs` gives `systemctl list-jobs UNIT`'s output or
/// the reason it could not be had (asked only when the service succeeded).
pub fn unwanted(
    unit: &str,
    service_result: Option<&str>,
    jobs: impl FnOnce() -> Result<String, String>,
) -> Option<String> {
    if let Some(result) = service_result
        && result != "success"
    {
        return Some(format!("failed ({result})"));
    }
    // `systemctl list-jobs UNIT`: JOB UNIT TYPE STATE. While ExecStopPost
    // runs for `systemctl restart` (and a package upgrade's), the job is
    // still "restart"; for `systemctl stop` it is "stop".
    let out = match jobs() {
        Ok(out) => out,
        Err(why) => return Some(format!("state unknown (systemctl: {why})")),
    };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1] == unit).then(|| f[2].to_owned())
        })
        .find(|ty| ty.contains("start") || ty.contains("restart") || ty == "reload")
        .map(|ty| format!("is restarting (job {ty})"))
}

/// `systemctl list-jobs --no-legend --full UNIT`, or why it failed.
fn list_jobs(unit: &str) -> Result<String, String> {
    match std::process::Command::new("systemctl").args(["list-jobs", "--no-legend", "--full", unit]).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Remove what a stopped daemon left, unless `unit`'s stop must keep it.
pub fn run(cfg: &Config, unit: Option<&str>) -> Result<Outcome, daemon::DaemonError> {
    if let Some(unit) = unit {
        let result = std::env::var("SERVICE_RESULT").ok();
        if let Some(why) = unwanted(unit, result.as_deref(), || list_jobs(unit)) {
            return Ok(Outcome::Kept { unit: unit.to_owned(), why });
        }
    }
    Ok(if daemon::cleanup(cfg)? { Outcome::Removed } else { Outcome::NoTable })
}

/// What `cleanup` prints.
pub fn render(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Kept { unit, why } => {
            format!("{unit} {why}: leaving table inet cgtproxy and its routing in place\n")
        }
        Outcome::Removed => "removed table inet cgtproxy and its routing\n".into(),
        Outcome::NoTable => "no table inet cgtproxy; routing of the config removed if present\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_or_a_failure_keeps_the_rules_and_a_stop_removes_them() {
        let u = "cgtproxy.service";
        let jobs = |out: &'static str| move || Ok(out.to_owned());
        assert_eq!(unwanted(u, Some("exit-code"), || panic!("not asked")).as_deref(), Some("failed (exit-code)"));
        assert_eq!(
            unwanted(u, Some("success"), jobs("12 cgtproxy.service restart running\n")).as_deref(),
            Some("is restarting (job restart)")
        );
        assert_eq!(unwanted(u, None, jobs("12 cgtproxy.service stop running\n")), None);
        assert_eq!(unwanted(u, None, || Err("no bus".into())).as_deref(), Some("state unknown (systemctl: no bus)"));
        let kept = Outcome::Kept { unit: u.into(), why: "is restarting (job restart)".into() };
        assert_eq!(
            render(&kept),
            "cgtproxy.service is restarting (job restart): leaving table inet cgtproxy and its routing in place\n"
        );
    }
}
