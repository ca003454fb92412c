//! What a system service needs: the unit, the sd_notify protocol, the man
//! page and completions.

mod common;
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
    let ns = NetNs::new("notify");
    let cg = TestCgroups::new("notify");
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
