//! What a system service needs: the unit, the sd_notify protocol, the man
//! page and completions.

mod common;
mod sysd;
use common::*;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn unit() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/misc/systemd/cgtproxy.service")).unwrap()
}

#[test]
fn unit_file_is_hardened_and_verifies() {
    let unit = unit();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/cgtproxy check config",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "ConfigurationDirectory=cgtproxy",
        "RuntimeDirectory=cgtproxy",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "unit lacks {line}");
    }
    if !try_sh("command -v systemd-analyze").0 {
        eprintln!("SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // Point the unit at the binary under test; the man page is not
    // installed here.
    let path = TempFile(std::env::temp_dir().join(format!("cgtproxy-{}.service", std::process::id())));
    std::fs::write(&*path, unit.replace("/usr/bin/cgtproxy", env!("CARGO_BIN_EXE_cgtproxy"))).unwrap();
    let dir = path.parent().unwrap().join(format!("cgtproxy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit_path = dir.join("cgtproxy.service");
    std::fs::copy(&*path, &unit_path).unwrap();
    let (ok, out) = try_sh(&format!("systemd-analyze verify --man=no {}", unit_path.display()));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
}

/// Read notify messages until one contains `want`.
fn wait_notify(sock: &UnixDatagram, want: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&msg);
            seen.push('|');
            if msg.contains(want) {
                return msg;
            }
        }
    }
    panic!("no notify message with {want:?} within {secs}s; seen: {seen}");
}

#[test]
fn sd_notify_ready_reloading_watchdog_stopping() {
    if !root("sd_notify_ready_reloading_watchdog_stopping") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("notify");
    cg.mkdir("a/b");
    let sock_path = std::env::temp_dir().join(format!("cgtproxy-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let _guard = TempFile(sock_path.clone());
    let config = format!("version: 1\nrules:\n  - {{match: '^{}/', direct: true}}\n", cg.rel);
    let (mut daemon, _cfg) =
        start_daemon_env(&ns, &config, &format!("NOTIFY_SOCKET={} WATCHDOG_USEC=200000", sock_path.display()));
    // READY comes after the first full sync (the daemon logged "ready").
    let ready = wait_notify(&sock, "READY=1", 5);
    assert!(ready.contains("STATUS=all cgroups classified"), "{ready}");
    wait_notify(&sock, "WATCHDOG=1", 2);
    wait_notify(&sock, "WATCHDOG=1", 2);
    daemon.signal(libc::SIGHUP);
    let reloading = wait_notify(&sock, "RELOADING=1", 5);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_notify(&sock, "READY=1", 5);
    daemon.signal(libc::SIGTERM);
    wait_notify(&sock, "STOPPING=1", 5);
    assert!(daemon.stop().success());
    assert_clean(&ns);
}

#[test]
fn man_page_and_completions() {
    let dir = std::env::temp_dir().join(format!("cgtproxy-gen-{}", std::process::id()));
    let out = sh(&format!("{} {}", env!("CARGO_BIN_EXE_cgtproxy-gen"), dir.display()));
    assert!(out.contains("cgtproxy.1"), "{out}");
    let man = std::fs::read_to_string(dir.join("cgtproxy.1")).unwrap();
    for needle in [".TH cgtproxy", "status", "explain", "SIGHUP", "/etc/cgtproxy/config.yaml", "EXIT STATUS"] {
        assert!(man.contains(needle), "man page lacks {needle}");
    }
    for f in ["cgtproxy.bash", "_cgtproxy", "cgtproxy.fish"] {
        let text = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
        assert!(text.contains("explain"), "{f} lacks subcommands");
    }
    if try_sh("command -v man").0 {
        let (ok, text) = try_sh(&format!("MANWIDTH=80 man -l {} 2>&1 | head -5", dir.join("cgtproxy.1").display()));
        assert!(ok && text.contains("cgtproxy"), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn journald_entries_carry_cgroup_rule_target() {
    if !root("journald_entries_carry_cgroup_rule_target") {
        return;
    }
    // A private mount namespace in which /run/systemd/journal/socket is our
    // socket, and stderr is announced as the journal stream: the daemon logs
    // native journal entries there, as under systemd.
    let Sandbox { ns, cg } = Sandbox::new("journal");
    let tmp = TempDir::new("journal");
    let dir = tmp.0.clone();
    let sock_path = dir.join("socket");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let config = TempFile(dir.join("config.yaml"));
    std::fs::write(&*config, format!("version: 1\nrules:\n  - {{match: '^{}/app', drop: true}}\n", cg.rel)).unwrap();
    let script = format!(
        "mount --make-rprivate / && mkdir -p /run/systemd && mount -t tmpfs none /run/systemd && \
         mkdir /run/systemd/journal && touch /run/systemd/journal/socket && \
         mount --bind {sock} /run/systemd/journal/socket && \
         JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) CGTPROXY_STATE={dir}/state.json \
         exec {enter} {bin} -c {cfg}",
        sock = sock_path.display(),
        dir = dir.display(),
        enter = ns.enter(),
        bin = env!("CARGO_BIN_EXE_cgtproxy"),
        cfg = config.display()
    );
    let mut daemon = Proc::spawn(&format!("unshare -m sh -c {}", shell_quote(&script)));
    wait_entry(&sock, "ready", 10);
    cg.mkdir("app");
    let entry = wait_entry(&sock, "classified", 10);
    let app = format!("{}/app", cg.rel);
    for (key, value) in
        [("F_CGROUP", app.as_str()), ("F_RULE", "0"), ("F_TARGET", "drop"), ("SYSLOG_IDENTIFIER", "cgtproxy")]
    {
        assert_eq!(entry.get(key).map(String::as_str), Some(value), "{key} in {entry:?}");
    }
    // The text says it too: `journalctl -u cgtproxy` shows only MESSAGE.
    assert_eq!(entry.get("MESSAGE").map(String::as_str), Some(format!("classified {app}: drop (rule 0)").as_str()));
    // unshare, sh and nsenter exec into the daemon: the child is the daemon.
    daemon.signal(libc::SIGHUP);
    let entry = wait_entry(&sock, "reloaded", 10);
    let text = &entry["MESSAGE"];
    assert!(text.starts_with(&format!("reloaded {}: ", config.display())) && text.contains("map elements"), "{text}");
    assert!(daemon.stop().success());
    assert_clean(&ns);
}

/// Decode a native journal entry: `KEY=value\n`, or `KEY\n` + u64 LE
/// length + value + `\n` for values that may hold newlines.
fn decode_entry(mut b: &[u8]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    while let Some(nl) = b.iter().position(|&c| c == b'\n') {
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(String::from_utf8_lossy(&line[..eq]).into(), String::from_utf8_lossy(&line[eq + 1..]).into());
            b = &b[nl + 1..];
        } else {
            let rest = &b[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..(8 + len).min(rest.len())];
            out.insert(String::from_utf8_lossy(line).into(), String::from_utf8_lossy(value).into());
            b = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    out
}

/// The first native journal entry whose MESSAGE starts with `message`.
fn wait_entry(sock: &UnixDatagram, message: &str, secs: u64) -> std::collections::HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let entry = decode_entry(&buf[..n]);
            if entry.get("MESSAGE").is_some_and(|m| m.starts_with(message)) {
                return entry;
            }
        }
    }
    panic!("no journal entry with MESSAGE {message:?} within {secs}s");
}

/// The man page's SUBCOMMANDS section names `cgtproxy-SUB(1)`: each such
/// page must exist.
#[test]
fn man_page_references_resolve() {
    let dir = TempDir::new("gen-refs");
    sh(&format!("{} {}", env!("CARGO_BIN_EXE_cgtproxy-gen"), dir.0.display()));
    let man = std::fs::read_to_string(dir.0.join("cgtproxy.1")).unwrap();
    let refs: Vec<String> = regex::Regex::new(r"cgtproxy\\-([a-z]+)\(1\)")
        .unwrap()
        .captures_iter(&man)
        .map(|c| format!("cgtproxy-{}.1", &c[1]))
        .collect();
    assert!(refs.len() >= 6, "subcommand references in cgtproxy.1: {refs:?}");
    for page in refs {
        let text = std::fs::read_to_string(dir.0.join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let name = page.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {name} 1")), "{page} has no .TH {name}");
        assert!(text.contains(r"\fBcgtproxy\fR(1)"), "{page} does not point back to cgtproxy(1)");
    }
}

/// `make install` copies what `make` built and never runs cargo (so
/// `sudo make install` builds nothing as root); both honour CARGO_TARGET_DIR.
#[test]
fn make_install_does_not_build_and_honours_cargo_target_dir() {
    if !try_sh("command -v make").0 {
        eprintln!("SKIPPED make_install_does_not_build_and_honours_cargo_target_dir: make is not installed");
        return;
    }
    let top = env!("CARGO_MANIFEST_DIR");
    let empty = TempDir::new("make-empty");
    let dest = TempDir::new("make-dest");
    let (ok, out) = try_sh(&format!(
        "make -C {top} install CARGO=false CARGO_TARGET_DIR={} DESTDIR={} 2>&1",
        empty.0.display(),
        dest.0.display()
    ));
    assert!(!ok && out.contains("run make (as yourself) before make install"), "{out}");
    assert!(!out.contains("false build"), "make install ran cargo: {out}");
    let plan = sh(&format!("make -C {top} -n all CARGO_TARGET_DIR={}", empty.0.display()));
    assert!(plan.contains(&format!("{}/release/cgtproxy-gen {}/gen", empty.0.display(), empty.0.display())), "{plan}");

    // With the build in place, install copies it into DESTDIR.
    let built = &empty.0;
    std::fs::create_dir_all(built.join("release")).unwrap();
    std::fs::copy(bin(), built.join("release/cgtproxy")).unwrap();
    sh(&format!("{} {}", env!("CARGO_BIN_EXE_cgtproxy-gen"), built.join("gen").display()));
    let out = sh(&format!(
        "make -C {top} install CARGO=false CARGO_TARGET_DIR={} DESTDIR={} PREFIX=/usr 2>&1",
        built.display(),
        dest.0.display()
    ));
    for f in [
        "usr/bin/cgtproxy",
        "usr/share/man/man1/cgtproxy.1",
        "usr/share/man/man1/cgtproxy-exec.1",
        "usr/lib/systemd/system/cgtproxy.service",
        "usr/share/doc/cgtproxy/LICENSE",
    ] {
        assert!(dest.0.join(f).exists(), "make install did not install {f}: {out}");
    }
}

/// The .deb as CI builds it (misc/debian/mkdeb, from the binary under
/// test): maintainer scripts, conffile, changelog, copyright, Maintainer
/// with an address, and lintian finds no error or warning.
#[test]
fn deb_is_complete_and_lintian_clean() {
    if !sysd::can_build_deb("deb_is_complete_and_lintian_clean") {
        return;
    }
    let out = TempDir::new("deb");
    let deb = sysd::build_deb(&out.0, None);
    let deb = deb.display();
    let info = sh(&format!("dpkg-deb --info {deb}"));
    for needle in ["postinst", "prerm", "postrm", "conffiles", "Maintainer: ", "@", "Depends: libc6"] {
        assert!(info.contains(needle), "dpkg-deb --info lacks {needle}:\n{info}");
    }
    let synopsis = info.lines().find_map(|l| l.trim().strip_prefix("Description: ")).unwrap();
    assert!(synopsis.len() <= 80 && !synopsis.ends_with(':'), "synopsis {synopsis:?}");
    let files = sh(&format!("dpkg-deb --contents {deb}"));
    for f in [
        "./usr/bin/cgtproxy",
        "./lib/systemd/system/cgtproxy.service",
        "./etc/cgtproxy/config.yaml",
        "./usr/share/doc/cgtproxy/copyright",
        "./usr/share/doc/cgtproxy/changelog.Debian.gz",
        "./usr/share/man/man1/cgtproxy.1.gz",
        "./usr/share/man/man1/cgtproxy-exec.1.gz",
    ] {
        assert!(files.lines().any(|l| l.ends_with(f)), "the .deb lacks {f}:\n{files}");
    }
    if !try_sh("command -v lintian").0 {
        eprintln!("SKIPPED lintian part of deb_is_complete_and_lintian_clean: lintian is not installed");
        return;
    }
    let (_, report) = try_sh(&format!("lintian --no-tag-display-limit {deb} 2>&1"));
    let bad: Vec<&str> = report.lines().filter(|l| l.starts_with("E:") || l.starts_with("W:")).collect();
    assert!(bad.is_empty(), "lintian:\n{report}");
}
