//! Hostile input: configs that are not regular files, too large, with
//! regexes too big to compile or errors too long to print; state files
//! naming processes that are not the daemon; symlinked state paths. Runs
//! the binary; needs no root. docs/security.md ("Files, signals and input
//! limits") describes the limits checked here.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `check config -c PATH`: must fail within the limits, naming the file.
fn check_fails(dir: &Path, path: &Path, what: &str) -> hostile::Run {
    let r = hostile::run(dir, &[], &["check", "config", "-c", path.to_str().unwrap()]);
    eprintln!("{what}: {} KiB peak RSS, {:?}: {}", r.max_rss_kib, r.elapsed, r.out.trim());
    assert!(!r.ok, "{what} must be refused: {}", r.out);
    assert!(r.out.contains(&path.display().to_string()), "{what}: the error names the file: {}", r.out);
    assert!(r.out.len() < 800, "{what}: a short error ({} bytes): {}", r.out.len(), r.out);
    assert!(r.max_rss_kib < 64 * 1024, "{what}: {} KiB", r.max_rss_kib);
    // A hang guard, not a speed figure (benches/hostile.rs measures): a
    // FIFO used to block `check` for ever.
    assert!(r.elapsed < Duration::from_secs(60), "{what}: {:?}", r.elapsed);
    r
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn configs_that_are_not_regular_files_are_refused_at_once() {
    let tmp = TempDir::new("hostile-files");
    let fifo = tmp.0.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = check_fails(&tmp.0, &fifo, "a FIFO");
    assert!(r.out.contains("a FIFO: a config must be a regular file"), "{}", r.out);
    assert!(r.elapsed < Duration::from_secs(2));
    let r = check_fails(&tmp.0, Path::new("/dev/zero"), "/dev/zero");
    assert!(r.out.contains("a character device"), "{}", r.out);
    let r = check_fails(&tmp.0, &tmp.0, "a directory");
    assert!(r.out.contains("a directory"), "{}", r.out);
    // A symbolic link to a regular file is a legitimate config.
    let real = write(&tmp.0, "real.yaml", "version: 1\n");
    let link = tmp.0.join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let r = hostile::run(&tmp.0, &[], &["check", "config", "-c", link.to_str().unwrap()]);
    assert!(r.ok, "{}", r.out);
}

#[test]
fn oversized_configs_are_refused() {
    let tmp = TempDir::new("hostile-size");
    let big = write(&tmp.0, "big.yaml", &format!("version: 1\n#{}\n", "x".repeat(1 << 20)));
    let r = check_fails(&tmp.0, &big, "a 1 MiB + 13 bytes config");
    assert!(r.out.contains("larger than 1048576 bytes"), "{}", r.out);
    let bad = tmp.0.join("latin1.yaml");
    std::fs::write(&bad, b"version: 1\n# caf\xe9\n").unwrap();
    let r = check_fails(&tmp.0, &bad, "not UTF-8");
    assert!(r.out.contains("line 2: not UTF-8"), "{}", r.out);
}

#[test]
fn long_garbage_gives_a_short_error_naming_the_line() {
    let tmp = TempDir::new("hostile-garbage");
    let cases = [
        ("garbage", format!("version: 1\nrules: [{} : : [\n", "x".repeat(20_000))),
        ("a long value", format!("version: 1\ncgroup-root: {}\n", "y".repeat(20_000))),
        ("a long key", format!("version: 1\ntproxies:\n  {}: {{mark: 1, port: 1}}\n", "k".repeat(20_000))),
        ("a long bypass", format!("version: 1\nbypass: ['{}']\n", "1".repeat(20_000))),
        ("a long regex", format!("version: 1\nrules:\n  - {{match: '({}', direct: true}}\n", "z".repeat(4000))),
        ("a 5 MB-like regex", format!("version: 1\nrules:\n  - {{match: '{}', direct: true}}\n", "a|".repeat(400_000))),
    ];
    for (what, text) in cases {
        let p = write(&tmp.0, "garbage.yaml", &text);
        let r = check_fails(&tmp.0, &p, what);
        assert!(r.out.contains("line ") || r.out.contains("larger than"), "{what}: {}", r.out);
        assert!(!r.out.contains(&"x".repeat(200)) && !r.out.contains(&"y".repeat(200)), "{what}: {}", r.out);
    }
}

#[test]
fn regexes_stay_within_memory_and_time() {
    let tmp = TempDir::new("hostile-regex");
    // One regex too big compiled; then many that each fit but not all.
    let p = write(&tmp.0, "one.yaml", hostile::ONE_HUGE_REGEX);
    let r = check_fails(&tmp.0, &p, "a regex too big compiled");
    assert!(r.out.contains("line 3") && r.out.contains("more than 1024 KiB"), "{}", r.out);
    let p = write(&tmp.0, "many.yaml", &hostile::many_big_regexes());
    let r = check_fails(&tmp.0, &p, "many big regexes");
    assert!(r.out.contains("32 MiB all regexes may take"), "{}", r.out);
    // Thousands of small rules fit, or stop at the budget; either way fast.
    let p = write(&tmp.0, "small.yaml", &hostile::many_small_regexes());
    check_fails(&tmp.0, &p, "many small regexes");
}

/// A state file naming `pid` with the start time `ticks`, in `dir`.
fn state_file(dir: &Path, pid: u32, ticks: u64) -> PathBuf {
    let p = dir.join("state.json");
    let state = cgtproxy::state::DaemonState { pid, start_ticks: ticks, ..Default::default() };
    std::fs::write(&p, serde_json::to_string(&state).unwrap()).unwrap();
    p
}

#[test]
fn reload_signals_nothing_but_the_daemon() {
    let tmp = TempDir::new("hostile-reload");
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let ticks = cgtproxy::state::start_time(child.id()).unwrap();
    // A live process that is not cgtproxy, with its true start time.
    let state = state_file(&tmp.0, child.id(), ticks);
    let r = hostile::run(&tmp.0, &[("CGTPROXY_STATE", &state)], &["reload"]);
    assert!(!r.ok, "{}", r.out);
    assert!(
        r.out.contains(&format!("names pid {}, which is not a cgtproxy daemon", child.id()))
            && r.out.contains("not signalled"),
        "{}",
        r.out
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "the process is still alive");
    // A stale state file: the start time of an earlier process.
    let state = state_file(&tmp.0, child.id(), ticks.saturating_sub(1));
    let r = hostile::run(&tmp.0, &[("CGTPROXY_STATE", &state)], &["reload"]);
    assert!(!r.ok && r.out.contains("it started at tick"), "{}", r.out);
    assert!(child.try_wait().unwrap().is_none(), "the process is still alive");
    child.kill().unwrap();
    child.wait().unwrap();
    // A dead pid.
    let state = state_file(&tmp.0, child.id(), ticks);
    let r = hostile::run(&tmp.0, &[("CGTPROXY_STATE", &state)], &["reload"]);
    assert!(!r.ok && r.out.contains("not signalled"), "{}", r.out);
    // A symlinked state file is refused, naming it.
    let target = state_file(&tmp.0, 1, 1);
    let link = tmp.0.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = hostile::run(&tmp.0, &[("CGTPROXY_STATE", &link)], &["reload"]);
    assert!(!r.ok && r.out.contains(&link.display().to_string()) && r.out.contains("symbolic link"), "{}", r.out);
    let r = hostile::run(&tmp.0, &[("CGTPROXY_STATE", &link)], &["status"]);
    assert!(r.out.contains("symbolic link"), "status says why: {}", r.out);
}
