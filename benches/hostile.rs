//! Hostile configs: peak RSS and wall time of `cgtproxy check config` on
//! the worst inputs of tests/hostile.rs, for docs/benchmarks.md. Needs no
//! root. `cargo bench --bench hostile` (release build; GNU time, Debian's
//! `time` package, measures the peak RSS: a child reaped by this process
//! would carry this process's own high-water mark from before its exec).

#[path = "../tests/common/mod.rs"]
mod common;
use common::{TempDir, bin, hostile};

/// `check config -c PATH` under /usr/bin/time: (accepted, first output
/// line, peak RSS in KiB, seconds).
fn measure(path: &std::path::Path) -> (bool, String, u64, f64) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS %M", bin(), "check", "config", "-c", path.to_str().unwrap()])
        .env("CGTPROXY_STATE", "/nonexistent/state.json")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("/usr/bin/time (apt-get install time)");
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let rss = text.lines().find_map(|l| l.strip_prefix("MAXRSS ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let first = text.lines().find(|l| !l.starts_with("MAXRSS") && !l.starts_with("Command exited")).unwrap_or("");
    (out.status.success(), first.chars().take(70).collect(), rss, secs)
}

fn main() {
    let tmp = TempDir::new("bench-hostile");
    let fifo = tmp.0.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut cases: Vec<(&str, std::path::PathBuf)> =
        vec![("a FIFO", fifo), ("/dev/zero", "/dev/zero".into()), ("a directory", tmp.0.clone())];
    for (what, name, text) in [
        (
            "5 MB regex",
            "five.yaml",
            format!("version: 1\nrules:\n  - {{match: '{}', direct: true}}\n", "a".repeat(5 << 20)),
        ),
        ("one regex too big compiled", "one.yaml", hostile::ONE_HUGE_REGEX.to_owned()),
        (
            "15 big regexes (fit)",
            "fifteen.yaml",
            hostile::many_big_regexes().lines().take(17).collect::<Vec<_>>().join("\n"),
        ),
        ("900 KB of big regexes", "many.yaml", hostile::many_big_regexes()),
        ("1 MB of small regexes", "small.yaml", hostile::many_small_regexes()),
    ] {
        let p = tmp.0.join(name);
        std::fs::write(&p, text).unwrap();
        cases.push((what, p));
    }
    println!("{:<28} {:>9} {:>10}  result", "config", "peak RSS", "time");
    for (what, path) in cases {
        let (ok, first, rss, secs) = measure(&path);
        let result = if ok { "accepted" } else { "refused" };
        println!("{what:<28} {:>6.1} MiB {secs:>8.3} s  {result}: {first}", rss as f64 / 1024.0);
    }
}
