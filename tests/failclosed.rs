//! Fail closed: what stays and what goes across stop, restart and death;
//! what the daemon says without privilege; routing that is exactly ours;
//! IPv6 disabled. (systemd-level stop/restart: tests/ with the systemd
//! harness, and benches/failclosed.rs for the escape counts.)

mod common;
use common::*;

fn config(rel: &str) -> String {
    format!(
        "version: 1\nroute-table: 300\ntproxies:\n  px: {{mark: 3000, port: 7893}}\nrules:\n  - {{match: '^{rel}/a', tproxy: px}}\n  - {{match: '^{rel}/d', drop: true}}\n"
    )
}

fn has_table(ns: &NetNs) -> bool {
    ns.sh("nft list tables").contains("inet cgtproxy")
}

fn our_rules(ns: &NetNs, fam: &str) -> usize {
    let rules = ns.sh(&format!("ip {fam} rule show"));
    rules
        .lines()
        .filter(|l| l.split('\t').nth(1).map(str::trim_end) == Some("from all fwmark 0xbb8 lookup 300"))
        .count()
}

/// Commits (by generation) that delete `table inet cgtproxy` without
/// adding it again in the same commit: moments without classification.
fn gaps(datagrams: &[Vec<u8>]) -> usize {
    use cgtproxy::nft::sys::{
        NFPROTO_INET, NFT_MSG_DELTABLE as DELTABLE, NFT_MSG_NEWGEN as NEWGEN, NFT_MSG_NEWTABLE as NEWTABLE,
    };
    let mut gaps = 0;
    let mut present = true;
    for d in datagrams {
        for m in nft_events(d) {
            let ours = m.family == NFPROTO_INET && m.attrs.windows(9).any(|w| w == b"cgtproxy\0");
            match m.msg {
                DELTABLE if ours => present = false,
                NEWTABLE if ours => present = true,
                NEWGEN if !present => gaps += 1,
                _ => {}
            }
        }
    }
    gaps
}

#[test]
fn keep_on_exit_keeps_everything_until_cleanup_and_restart_has_no_gap() {
    if !root("keep_on_exit_keeps_everything_until_cleanup_and_restart_has_no_gap") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("keep");
    cg.mkdir("a");
    cg.mkdir("d");
    let text = config(&cg.rel);
    let (mut daemon, cfg) = start_daemon_env(&ns, &text, "CGTPROXY_KEEP_ON_EXIT=true");
    enter_netns(&ns);
    let mut mon = nft_monitor();
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert!(has_table(&ns), "the table must stay after SIGTERM with --keep-on-exit");
    for fam in ["-4", "-6"] {
        assert_eq!(our_rules(&ns, fam), 1, "routing must stay ({fam})");
    }
    // A restart: the new instance replaces the table in one commit.
    let (mut daemon, _cfg2) = start_daemon_env(&ns, &text, "CGTPROXY_KEEP_ON_EXIT=true");
    let seen = mon.read_queued().unwrap();
    assert!(!seen.is_empty(), "no nf_tables notifications seen");
    assert_eq!(gaps(&seen), 0, "a commit left the table deleted during the restart");
    for fam in ["-4", "-6"] {
        assert_eq!(our_rules(&ns, fam), 1, "routing not duplicated ({fam})");
    }
    assert!(daemon.stop().success());
    assert!(has_table(&ns));
    // `cgtproxy cleanup` removes all of it.
    let out = ns.sh(&format!("{} {} cleanup -c {}", ns.enter(), bin(), cfg.display()));
    assert!(out.contains("removed table inet cgtproxy"), "{out}");
    assert_clean(&ns);
    // Interactive use (no --keep-on-exit) still cleans up on SIGTERM.
    let (mut daemon, _cfg3) = start_daemon(&ns, &text);
    assert!(daemon.stop().success());
    assert_clean(&ns);
}

#[test]
fn cleanup_for_a_failed_unit_keeps_the_rules() {
    if !root("cleanup_for_a_failed_unit_keeps_the_rules") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("failed");
    let (mut daemon, cfg) = start_daemon_env(&ns, &config(&cg.rel), "CGTPROXY_KEEP_ON_EXIT=true");
    daemon.signal(libc::SIGKILL);
    let _ = daemon.child.wait();
    let out = ns.sh(&format!(
        "env SERVICE_RESULT=signal {} {} cleanup --unit cgtproxy.service -c {}",
        ns.enter(),
        bin(),
        cfg.display()
    ));
    assert!(out.contains("leaving table inet cgtproxy"), "{out}");
    assert!(has_table(&ns));
    ns.sh(&format!("{} {} cleanup -c {}", ns.enter(), bin(), cfg.display()));
    assert_clean(&ns);
}

#[test]
fn without_cap_net_admin_the_error_names_it() {
    if !root("without_cap_net_admin_the_error_names_it") {
        return;
    }
    if !try_sh("command -v setpriv").0 {
        eprintln!("SKIPPED without_cap_net_admin_the_error_names_it: setpriv is not installed");
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("noperm");
    let (ok, out, took) = start_unprivileged(&ns, &config(&cg.rel));
    eprintln!("unprivileged start failed after {took:?}");
    assert!(!ok, "an unprivileged daemon must fail: {out}");
    assert!(out.contains("CAP_NET_ADMIN"), "{out}");
    assert!(!out.contains("no reply"), "{out}");
}

#[test]
fn lookalike_rules_are_not_ours_and_stay() {
    if !root("lookalike_rules_are_not_ours_and_stay") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("alike");
    ns.sh("ip rule add not fwmark 3000 lookup 300 priority 100");
    ns.sh("ip rule add fwmark 3000/0xff lookup 300 priority 101");
    ns.sh("ip rule add fwmark 3000 iif lo lookup 300 priority 102");
    let (mut daemon, _cfg) = start_daemon(&ns, &config(&cg.rel));
    assert_eq!(our_rules(&ns, "-4"), 1, "{}", ns.sh("ip rule show"));
    // Someone deletes our route: it comes back (route notifications).
    ns.sh("ip route flush table 300");
    let back = wait_until(5, || ns.sh("ip route show table 300").contains("local default dev lo"));
    assert!(back, "route not restored:\n{}", daemon.output());
    assert!(daemon.stop().success(), "{}", daemon.output());
    let rules = ns.sh("ip rule show");
    assert_eq!(our_rules(&ns, "-4"), 0, "{rules}");
    for alike in [
        "not from all fwmark 0xbb8 lookup 300",
        "all fwmark 0xbb8/0xff lookup 300",
        "all fwmark 0xbb8 iif lo lookup 300",
    ] {
        assert!(rules.contains(alike), "someone else's rule `{alike}` was removed:\n{rules}");
    }
}

#[test]
fn ipv6_disabled_routes_ipv4_only_with_one_warning() {
    if !root("ipv6_disabled_routes_ipv4_only_with_one_warning") {
        return;
    }
    let ns = NetNs::new("nov6");
    ns.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1");
    let cg = TestCgroups::new("nov6");
    cg.mkdir("a");
    let (mut daemon, _cfg) = start_daemon(&ns, &config(&cg.rel));
    assert_eq!(our_rules(&ns, "-4"), 1);
    assert!(ns.sh("ip route show table 300").contains("local default dev lo"));
    assert!(has_table(&ns));
    assert_eq!(daemon.output().matches("IPv6 is disabled").count(), 1, "{}", daemon.output());
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&ns);
}

/// Drop CAP_NET_ADMIN from the calling thread only (capset with pid 0).
fn drop_net_admin_in_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a valid v3 header and two data structs.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()), 0);
        d[0].effective &= !(1 << 12);
        d[0].permitted &= !(1 << 12);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()), 0);
    }
}

#[test]
fn eperm_on_the_batch_begin_is_reported_at_once() {
    if !root("eperm_on_the_batch_begin_is_reported_at_once") {
        return;
    }
    private_netns();
    drop_net_admin_in_this_thread();
    let cfg = cgtproxy::config::Config::parse("version: 1\n", "<test>").unwrap();
    let rs = cgtproxy::ruleset::Ruleset::build(&cfg, &[]);
    let started = std::time::Instant::now();
    let err = cgtproxy::nft::Nft::open().unwrap().apply_full(&rs).unwrap_err().to_string();
    eprintln!("EPERM reported after {:?}: {err}", started.elapsed());
    assert!(err.contains("nftables batch") && err.contains("missing CAP_NET_ADMIN"), "{err}");
    // rtnetlink refuses with EPERM on the request itself.
    let err = cgtproxy::route::Routes::open().unwrap().install(&[3000], 300).unwrap_err().to_string();
    assert!(err.contains("missing CAP_NET_ADMIN"), "{err}");
}

#[test]
fn an_unmounted_cgroup_root_degrades_and_recovers() {
    if !root("an_unmounted_cgroup_root_degrades_and_recovers") {
        return;
    }
    let ns = NetNs::new("umount");
    let dir = TempDir::new("umount");
    let mnt = dir.0.join("cg");
    std::fs::create_dir(&mnt).unwrap();
    let cfg = dir.0.join("c.yaml");
    std::fs::write(
        &cfg,
        format!("version: 1\ncgroup-root: {}\nrules:\n  - {{match: '^/nothing', drop: true}}\n", mnt.display()),
    )
    .unwrap();
    // The daemon gets a mount namespace of its own with a second cgroup2
    // mount, which the test unmounts and mounts again.
    let daemon = Proc::spawn(&format!(
        "unshare -m --propagation private sh -c 'mount -t cgroup2 none {m} && exec env CGTPROXY_STATE={d}/state.json {e} {b} -c {c}'",
        m = mnt.display(),
        d = dir.0.display(),
        e = ns.enter(),
        b = bin(),
        c = cfg.display()
    ));
    daemon.wait_for("ready", 30);
    let pid = daemon.child.id();
    sh(&format!("nsenter -m -t {pid} umount {}", mnt.display()));
    daemon.wait_for("removed or unmounted", 10);
    daemon.wait_for("retrying", 10);
    assert!(has_table(&ns), "the last good kernel state stays");
    let state = || std::fs::read_to_string(dir.0.join("state.json")).unwrap_or_default();
    assert!(wait_until(5, || state().contains("\"degraded\": \"")), "{}", state());
    sh(&format!("nsenter -m -t {pid} mount -t cgroup2 none {}", mnt.display()));
    daemon.wait_for("recovered", 70);
    assert!(wait_until(5, || state().contains("\"degraded\": null")), "{}", state());
    let mut daemon = daemon;
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&ns);
}
