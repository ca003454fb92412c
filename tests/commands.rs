//! `status`, `explain`, `print --diff` and `reload` against a running daemon
//! in a test namespace.

mod common;
use common::*;

#[test]
fn inspection_commands_on_live_state() {
    if !root("inspection_commands_on_live_state") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("cmds");
    cg.mkdir("app/child");
    cg.mkdir("off");
    cg.mkdir("plain");
    let rel = cg.rel.clone();
    let config = format!(
        "version: 1\ncounters: true\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/app$', tproxy: px}}\n  - {{match: '^{rel}/off', drop: true}}\n"
    );
    let (mut daemon, cfg) = start_daemon(&ns, &config);
    let state = cfg.with_extension("state.json");
    let run =
        |args: &str| ns.try_sh(&format!("CGTPROXY_STATE={} {} -c {} {args}", state.display(), bin(), cfg.display()));

    // status
    let (ok, out) = run("status");
    assert!(ok, "{out}");
    assert!(out.contains(&format!("daemon: running, pid {}", daemon.child.id())), "{out}");
    assert!(out.contains("table inet cgtproxy: present, 2 classified cgroups"), "{out}");
    assert!(out.contains("routing: fwmark 0xbb8 lookup 300 (IPv4 and IPv6): in place"), "{out}");
    let row = |fields: &[&str]| out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == fields);
    // TARGET, RULE, PACKETS, BYTES, PATH (nothing sent yet)
    assert!(row(&["tproxy", "px", "0", "0", "0", &format!("{rel}/app")]), "{out}");
    assert!(row(&["drop", "1", "0", "0", &format!("{rel}/off")]), "{out}");
    let (ok, out) = run("status --json");
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["table"], true);
    assert_eq!(json["routing"], true);
    assert_eq!(json["totals"]["tproxy px"], 1);
    assert_eq!(json["daemon"]["pid"], daemon.child.id());
    assert_eq!(json["cgroups"].as_array().unwrap().len(), 2);

    // counters: traffic from `app` is counted on its element
    let sent = sh(&format!(
        "echo $$ > {}/app/cgroup.procs && {} python3 -c \"import socket; [socket.socket(2, 2).sendto(b'x' * 100, ('127.0.0.1', 9)) for _ in range(5)]\" && echo sent",
        cg.dir.display(),
        ns.enter()
    ));
    assert!(sent.contains("sent"), "{sent}");
    let (ok, out) = run("status --json");
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app = json["cgroups"].as_array().unwrap().iter().find(|c| c["path"] == format!("{rel}/app")).unwrap().clone();
    assert!(app["packets"].as_u64().unwrap() >= 5 && app["bytes"].as_u64().unwrap() >= 500, "{app}");
    assert!(json["traffic"]["tproxy px"][0].as_u64().unwrap() >= 5, "{json}");
    let (_, out) = run("status");
    assert!(out.contains("PACKETS") && out.contains(" packets, "), "{out}");

    // explain: a matched cgroup, an unmatched child, a PID
    let (ok, out) = run(&format!("explain {rel}/app"));
    assert!(ok, "{out}");
    assert!(out.contains("rule 0 (line 5") && out.contains("-> tproxy px"), "{out}");
    assert!(out.contains("kernel: cgroup-class holds 0x00000bb8 (tproxy px) for it"), "{out}");
    let (ok, out) = run(&format!("explain {rel}/app/child"));
    assert!(ok, "{out}");
    assert!(out.contains("no rule matches") && out.contains("holds nothing for it"), "{out}");
    assert!(out.contains(&format!("effective: tproxy px (inherited from {rel}/app)")), "{out}");
    let mut sleeper = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}/off/cgroup.procs && exec sleep 30", cg.dir.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (ok, out) = run(&format!("explain {}", sleeper.id()));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("cgroup {rel}/off")) && out.contains("effective: drop"), "{out}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (ok, out) = run("explain nonsense");
    assert!(!ok && out.contains("not a PID"), "{out}");

    // print --diff: equal, then a change behind the (stopped) daemon's back
    let (ok, out) = run("print --diff");
    assert!(ok && out.trim().is_empty(), "{out}");
    daemon.signal(libc::SIGSTOP);
    cg.mkdir("off/new");
    let (ok, out) = run("print --diff");
    assert!(!ok, "a difference exits 1: {out}");
    assert!(
        out.contains("--- kernel")
            && out.contains(&format!("+\t\t\t\"{}/off/new\" : 0x43475402", rel.trim_start_matches('/'))),
        "{out}"
    );
    daemon.signal(libc::SIGCONT);
    assert!(wait_until(2, || run("print --diff").0), "the daemon caught up");

    // reload through the state file
    let (ok, out) = run("reload");
    assert!(ok && out.contains("reload requested"), "{out}");
    daemon.wait_for("reloaded", 10);

    let status = daemon.stop();
    assert!(status.success());
    let (ok, out) = run("status");
    assert!(ok, "{out}");
    assert!(out.contains("daemon: not running") && out.contains("ABSENT"), "{out}");
    assert!(!state.exists(), "the state file is removed on exit");
    let (ok, out) = run("reload");
    assert!(!ok && out.contains("no running daemon"), "{out}");
    assert_clean(&ns);
}

#[test]
fn exec_builds_the_systemd_run_command() {
    let out = sh(&format!("{} exec proxy --dry-run -- curl -s https://example.org", bin()));
    assert_eq!(
        out.trim(),
        "systemd-run --user --scope --quiet --collect --slice=cgtproxy-proxy.slice -- curl -s https://example.org"
    );
    let (ok, out) = try_sh(&format!("{} exec 'a/b' --dry-run -- true", bin()));
    assert!(!ok && out.contains("letters, digits"), "{out}");
}

#[test]
fn status_and_explain_as_a_user_and_from_another_netns() {
    if !root("status_and_explain_as_a_user_and_from_another_netns") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("user");
    cg.mkdir("app");
    let rel = cg.rel.clone();
    let config = format!(
        "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/app$', tproxy: px}}\n"
    );
    // As under the shipped unit (UMask=0077): the state file must still be
    // readable by everyone.
    let tmp = TempDir::new("user");
    let cfg = tmp.0.join("config.yaml");
    std::fs::write(&cfg, &config).unwrap();
    let state = tmp.0.join("state.json");
    let mut daemon = Proc::spawn(&format!(
        "sh -c 'umask 077; CGTPROXY_STATE={} exec {} {} -c {}'",
        state.display(),
        ns.enter(),
        bin(),
        cfg.display()
    ));
    daemon.wait_for("ready", 20);
    assert!(wait_until(5, || state.exists()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o644);
    // nobody, with no capability at all, in the daemon's namespace.
    let as_user = |args: &str| {
        ns.try_sh(&format!(
            "CGTPROXY_STATE={} setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
             {} -c {} {args}",
            state.display(),
            bin(),
            cfg.display()
        ))
    };
    let (ok, out) = as_user("status");
    assert!(ok, "what could be shown exits 0: {out}");
    assert!(out.contains(&format!("daemon: running, pid {}", daemon.child.id())), "{out}");
    assert!(out.contains("table inet cgtproxy: not shown: reading the kernel needs CAP_NET_ADMIN"), "{out}");
    assert!(out.contains("what the config classifies now"), "{out}");
    let row = |out: &str, fields: &[&str]| out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == fields);
    assert!(row(&out, &["tproxy", "px", "0", &format!("{rel}/app")]), "{out}");
    assert!(out.contains("routing: fwmark 0xbb8 lookup 300 (IPv4 and IPv6): in place"), "{out}");
    let (ok, out) = as_user("status --json");
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(json["kernel_unreadable"].as_str().unwrap().contains("CAP_NET_ADMIN"), "{json}");
    let (ok, out) = as_user(&format!("explain {rel}/app"));
    assert!(ok, "{out}");
    assert!(out.contains("rule 0 (line 4") && out.contains("-> tproxy px"), "{out}");
    assert!(out.contains("kernel: not shown: reading the kernel needs CAP_NET_ADMIN"), "{out}");

    // As root, from a namespace that is not the daemon's.
    let (ok, out) =
        try_sh(&format!("CGTPROXY_STATE={} unshare -n {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(ok, "{out}");
    assert!(out.contains("runs in another network namespace") && out.contains("nsenter --net=/proc/"), "{out}");
    let (ok, out) = run_in(&ns, &state, &cfg, "status");
    assert!(ok && !out.contains("another network namespace"), "{out}");
    assert!(daemon.stop().success());
}

fn run_in(ns: &NetNs, state: &std::path::Path, cfg: &std::path::Path, args: &str) -> (bool, String) {
    ns.try_sh(&format!("CGTPROXY_STATE={} {} -c {} {args}", state.display(), bin(), cfg.display()))
}

/// `cgtproxy print | nft -f -` loads on this host, hybrid (cgroup2 at
/// /sys/fs/cgroup/unified) or not, and nft reads back the same cgroups.
#[test]
fn print_output_loads_with_nft() {
    if !root("print_output_loads_with_nft") {
        return;
    }
    let cg = TestCgroups::new("print");
    cg.mkdir("app");
    let rel = cg.rel.clone();
    let tmp = TempDir::new("print");
    let cfg = tmp.0.join("config.yaml");
    std::fs::write(
        &cfg,
        format!("version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/app$', tproxy: px}}\n"),
    )
    .unwrap();
    let (ok, out) = try_sh(&format!(
        "unshare -n sh -c '{} -c {} print | nft -f - && nft list map inet cgtproxy cgroup-class'",
        bin(),
        cfg.display()
    ));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{}/app\" : 0x00000bb8", rel)), "{out}");
}
