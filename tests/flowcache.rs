//! Issue 22: a flow is classified once and its class kept in the
//! conntrack mark; every promise of per-packet classification still holds.
//! Each test sends one long UDP flow (one socket, one 5-tuple) from a test
//! cgroup to the remote host's port 9999, which counts what arrives.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn boundary_py() -> String {
    format!("python3 {}/tests/boundary.py", env!("CARGO_MANIFEST_DIR"))
}

/// A flow of `count` datagrams, 20 ms apart, from cgroup `dir`.
fn flow(ns: &NetNs, dir: &Path, count: u32) -> Proc {
    let p = Proc::spawn(&format!(
        "sh -c 'echo $$ > {}/cgroup.procs && exec {} {} flow {REMOTE4} 9999 {count} 0.02'",
        dir.display(),
        ns.enter(),
        boundary_py()
    ));
    p.wait_for("START", 10);
    p
}

fn config(rel: &str, extra: &str, app: &str) -> String {
    format!(
        "version: 1\n{extra}\
         rules:\n\
         \x20 - {{match: '^{rel}/app', {app}: true}}\n\
         \x20 - {{match: '^{rel}/late', drop: true}}\n"
    )
}

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Packets that reached the remote host while `f` ran, after a short
/// settling time.
fn arrived_during(bed: &Testbed, ms: u64) -> u64 {
    let before = bed.packets_at_9999();
    sleep(ms);
    bed.packets_at_9999() - before
}

#[test]
fn a_reload_applies_to_flows_already_cached() {
    if !root("a_reload_applies_to_flows_already_cached") {
        return;
    }
    let bed = Testbed::new("fr");
    let cg = TestCgroups::new("fr");
    let app = cg.mkdir("app");
    // Count, after our chain, the flows whose conntrack mark holds a token.
    bed.local.sh("nft 'add table inet probe; add chain inet probe out { type route hook output priority -140; }; \
         add rule inet probe out udp dport 9999 ct mark & 0xfff00000 != 0 counter'");
    let (daemon, cfg) = start_daemon(&bed.local, &config(&cg.rel, "", "direct"));
    let _f = flow(&bed.local, &app, 200);
    assert!(arrived_during(&bed, 600) > 10, "direct: the flow arrives");
    let probe = bed.local.sh("nft list chain inet probe out");
    let cached: u64 = probe.split("packets ").nth(1).and_then(|p| p.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(cached > 10, "the flow's class is cached in its conntrack mark: {probe}");
    std::fs::write(&*cfg, config(&cg.rel, "", "drop")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("reloaded", 10);
    sleep(200);
    assert_eq!(arrived_during(&bed, 800), 0, "after a reload to drop, the cached flow is dropped");
    std::fs::write(&*cfg, config(&cg.rel, "", "direct")).unwrap();
    daemon.signal(libc::SIGHUP);
    sleep(300);
    assert!(arrived_during(&bed, 600) > 10, "and back to direct");
}

#[test]
fn a_flow_that_beat_the_daemon_is_not_cached_as_unmatched() {
    if !root("a_flow_that_beat_the_daemon_is_not_cached_as_unmatched") {
        return;
    }
    let bed = Testbed::new("fl");
    let cg = TestCgroups::new("fl");
    cg.mkdir("app");
    let (daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel, "", "direct"));
    // The app wins the race: its cgroup exists and sends before the daemon
    // has classified it (the daemon is stopped meanwhile).
    daemon.signal(libc::SIGSTOP);
    let late = cg.mkdir("late");
    let _f = flow(&bed.local, &late, 200);
    let early = arrived_during(&bed, 400);
    daemon.signal(libc::SIGCONT);
    daemon.wait_for(&format!("classified {}/late", cg.rel), 10);
    daemon.wait_for(&format!("new flow-cache generation: the new cgroup {}/late already had processes", cg.rel), 10);
    sleep(100);
    assert!(early > 5, "unclassified, the flow went direct ({early})");
    assert_eq!(arrived_during(&bed, 800), 0, "once its cgroup is classified drop, the cached flow is dropped");
}

#[test]
fn an_empty_new_cgroup_costs_no_generation() {
    if !root("an_empty_new_cgroup_costs_no_generation") {
        return;
    }
    let bed = Testbed::new("fe");
    let cg = TestCgroups::new("fe");
    let (daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel, "", "direct"));
    let tokens = || bed.local.sh("nft list map inet cgtproxy flow-class");
    let before = tokens();
    // A new drop cgroup (its parent is unmatched: direct) with no process
    // yet: no flow of it can be cached, the generation stays.
    let late = cg.mkdir("late");
    daemon.wait_for(&format!("classified {}/late", cg.rel), 10);
    sleep(100);
    assert_eq!(tokens(), before, "same tokens");
    assert!(!daemon.output().contains("new flow-cache generation"), "{}", daemon.output());
    // A process that enters now finds the element: dropped from its first packet.
    let _f = flow(&bed.local, &late, 50);
    assert_eq!(arrived_during(&bed, 400), 0, "the drop cgroup's flow is dropped");
}

/// Packets counted for `target` (`direct`, `drop`): its rule in
/// output-mangle (a flow's first packet) plus its flow-cache chain (the
/// cached ones).
fn target_packets(ns: &NetNs, target: &str) -> u64 {
    let count = |text: &str, pick: &dyn Fn(&str) -> bool| -> u64 {
        text.lines()
            .filter(|l| pick(l))
            .filter_map(|l| l.split("packets ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let class = if target == "direct" { "0x43475401" } else { "0x43475402" };
    let output = ns.sh("nft list chain inet cgtproxy output-mangle");
    let cached = ns.sh(&format!("nft list chain inet cgtproxy flow-{target}"));
    count(&output, &|l| l.contains(&format!("meta mark {class} counter"))) + count(&cached, &|_| true)
}

#[test]
fn every_packet_of_a_cached_flow_is_counted_for_its_target() {
    if !root("every_packet_of_a_cached_flow_is_counted_for_its_target") {
        return;
    }
    let bed = Testbed::new("fk");
    let cg = TestCgroups::new("fk");
    let direct = cg.mkdir("app");
    let drop = cg.mkdir("late");
    let (_daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel, "", "direct"));
    let f = flow(&bed.local, &direct, 40);
    f.wait_for("DONE", 10);
    let f = flow(&bed.local, &drop, 25);
    f.wait_for("DONE", 10);
    sleep(100);
    assert_eq!(bed.packets_at_9999(), 40, "the direct flow arrived, the dropped one did not");
    assert_eq!(target_packets(&bed.local, "direct"), 40, "direct: first packet by its rule, 39 cached");
    assert_eq!(target_packets(&bed.local, "drop"), 25, "drop: every datagram, though only the first was classified");
    let cached = bed.local.sh("nft list chain inet cgtproxy flow-direct");
    assert!(cached.contains("packets 39 "), "the cache counted the later packets: {cached}");
}

#[test]
fn strict_mode_never_caches_a_hold() {
    if !root("strict_mode_never_caches_a_hold") {
        return;
    }
    let bed = Testbed::new("fs");
    let cg = TestCgroups::new("fs");
    let (daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel, "strict: true\n", "direct"));
    daemon.signal(libc::SIGSTOP);
    let app = cg.mkdir("app");
    let _f = flow(&bed.local, &app, 200);
    let held = arrived_during(&bed, 400);
    daemon.signal(libc::SIGCONT);
    daemon.wait_for(&format!("classified {}/app", cg.rel), 10);
    sleep(100);
    assert_eq!(held, 0, "strict: an unknown cgroup's flow is held");
    assert!(arrived_during(&bed, 600) > 10, "once classified direct, the same flow flows");
}

#[test]
fn foreign_conntrack_marks_are_kept_and_never_cached_over() {
    if !root("foreign_conntrack_marks_are_kept_and_never_cached_over") {
        return;
    }
    let bed = Testbed::new("ff");
    let cg = TestCgroups::new("ff");
    let direct = cg.mkdir("app");
    let drop = cg.mkdir("late");
    // Another program's conntrack mark bits (Kubernetes-like 0x4000, set
    // before our chain) and wg-quick's whole 0xca6c (after it).
    bed.local.sh("nft 'add table inet other; \
         add chain inet other pre { type route hook output priority -160; }; \
         add chain inet other post { type route hook output priority -140; }; \
         add rule inet other pre udp dport 9999 ct mark set ct mark or 0x4000; \
         add rule inet other post udp dport 9999 ct mark & 0x4000 == 0x4000 counter; \
         add rule inet other post udp dport 9999 counter'");
    let (_daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel, "", "direct"));
    let f = flow(&bed.local, &direct, 30);
    f.wait_for("DONE", 10);
    sleep(100);
    let listing = bed.local.sh("nft list chain inet other post");
    let counts: Vec<&str> = listing.lines().filter_map(|l| l.split("packets ").nth(1)?.split(' ').next()).collect();
    assert_eq!(counts, ["30", "30"], "the foreign bit stays on every packet: {listing}");
    assert_eq!(bed.packets_at_9999(), 30);
    // A drop app's flow with foreign bits is classified on every packet.
    let f = flow(&bed.local, &drop, 30);
    f.wait_for("DONE", 10);
    sleep(100);
    assert_eq!(bed.packets_at_9999(), 30, "the drop flow sent nothing");
}
