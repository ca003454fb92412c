//! Hostile configs and a measured run of the binary (peak RSS and wall
//! time), shared by tests/hostile.rs and benches/hostile.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::bin;

/// One regex whose compiled program is over the per-regex limit.
pub const ONE_HUGE_REGEX: &str = "version: 1\nrules:\n  - {match: '(((a{100}){100}){100}){100}', direct: true}\n";

/// About 900 KB of regexes that each fit but not all together.
pub fn many_big_regexes() -> String {
    let mut many = "version: 1\nrules:\n".to_owned();
    while many.len() < 900_000 {
        many.push_str("  - {match: '(?:\\w{20}){150}', direct: true}\n");
    }
    many
}

/// Just under 1 MB of small rules: they fit, or stop at the budget.
pub fn many_small_regexes() -> String {
    let mut small = "version: 1\nrules:\n".to_owned();
    let mut i = 0;
    while small.len() < 1_000_000 {
        small.push_str(&format!("  - {{match: '^/x{i}/.*y.*$', direct: true}}\n"));
        i += 1;
    }
    small
}

/// What a run of the binary did: success, stdout+stderr, peak RSS in KiB
/// (getrusage of the child, via wait4), wall time.
pub struct Run {
    pub ok: bool,
    pub out: String,
    pub max_rss_kib: i64,
    pub elapsed: Duration,
}

pub fn run(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let out_path = dir.join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let t = Instant::now();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).stdin(std::process::Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    cmd.env_remove("RUNTIME_DIRECTORY").env_remove("CONFIGURATION_DIRECTORY").env("CGTPROXY_STATE", dir.join("none"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Reaped by wait4 below (for its rusage), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers to locals.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(rc, child.id() as i32, "wait4: {}", std::io::Error::last_os_error());
    let elapsed = t.elapsed();
    let out = std::fs::read_to_string(&out_path).unwrap();
    let _ = std::fs::remove_file(&out_path);
    Run { ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, out, max_rss_kib: usage.ru_maxrss, elapsed }
}
