//! Scale and latency figures for docs/benchmarks.md (run as root):
//!
//!     cargo bench --bench scale            # everything
//!     CGTPROXY_BENCH_MAX=10000 cargo bench --bench scale   # skip 100,000
//!
//! Prints a Markdown table. Nothing here asserts a time: figures vary with
//! the machine and belong in docs, not in pass/fail.

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

use std::time::{Duration, Instant};

use cgtproxy::nft::Nft;

fn rss_peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn config(rel: &str, strict: bool) -> String {
    format!(
        "version: 1\nstrict: {strict}\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/', tproxy: px}}\n"
    )
}

/// `n` leaf cgroups four levels below the subtree: a{i/1000}/b{i/100%10}/leaf{i}.
fn make_tree(cg: &TestCgroups, n: usize) -> usize {
    for i in 0..n {
        std::fs::create_dir_all(cg.dir.join(format!("a{}/b{}/leaf{i}", i / 1000, (i / 100) % 10))).unwrap();
    }
    ids_below(&cg.root, &cg.dir).len()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(what: &str, value: String) {
    println!("| {what} | {value} |");
}

fn startup(ns: &NetNs, n: usize) {
    let cg = TestCgroups::new(&format!("start{n}"));
    let t = Instant::now();
    let count = make_tree(&cg, n);
    let made = t.elapsed();
    let started = Instant::now();
    let (mut daemon, _cfg) = start_daemon(ns, &config(&cg.rel, false));
    let ready = started.elapsed();
    let mut nft = Nft::open().unwrap();
    let in_map = nft.cgroup_map().unwrap().len();
    // A dump of a large hash set can miss entries while the kernel resizes
    // it; ask for every element instead.
    let ids = ids_below(&cg.root, &cg.dir);
    let absent = ids.iter().filter(|id| !nft.has_cgroup(**id).unwrap()).count();
    let rss = rss_peak_kib(daemon.child.id());
    let stopping = Instant::now();
    let status = daemon.stop();
    let stop = stopping.elapsed();
    assert!(status.success());
    row(
        &format!("startup, {n} leaves ({count} cgroups, 4 levels)"),
        format!(
            "{:.3} s to ready, {absent} of {count} absent (a dump listed {in_map}); stop {:.3} s; peak RSS {:.1} MiB; (mkdir of the tree: {:.2} s)",
            ready.as_secs_f64(),
            stop.as_secs_f64(),
            rss as f64 / 1024.0,
            made.as_secs_f64()
        ),
    );
    remove_tree(&cg.dir);
}

fn latency(ns: &NetNs, strict: bool, existing: usize) {
    let cg = TestCgroups::new("lat");
    if existing > 0 {
        make_tree(&cg, existing);
    }
    let (mut daemon, _cfg) = start_daemon(ns, &config(&cg.rel, strict));
    let mut nft = Nft::open().unwrap();
    let mut samples = Vec::new();
    let mut mkdirs = Vec::new();
    for i in 0..1000 {
        let d = cg.dir.join(format!("l{i}"));
        let t = Instant::now();
        std::fs::create_dir(&d).unwrap();
        mkdirs.push(t.elapsed().as_secs_f64() * 1e3);
        let id = cgtproxy::cgroup::id_of(&d).unwrap();
        while !nft.has_cgroup(id).unwrap() {
            assert!(t.elapsed() < Duration::from_secs(5), "element never appeared");
            // Leave the CPU to the daemon: there are two on this machine.
            std::thread::yield_now();
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(2));
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    mkdirs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    row(
        &format!(
            "reaction mkdir -> element in kernel, idle, 1000 samples, {existing} cgroups mapped before{}",
            if strict { ", strict" } else { "" }
        ),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (of which mkdir(2) itself: p50 {:.3} ms, p99 {:.3} ms)",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            percentile(&mkdirs, 0.5),
            percentile(&mkdirs, 0.99),
        ),
    );
    daemon.stop();
}

fn burst(ns: &NetNs) {
    let cg = TestCgroups::new("burst");
    let (mut daemon, _cfg) = start_daemon(ns, &config(&cg.rel, false));
    let mut nft = Nft::open().unwrap();
    let t = Instant::now();
    for i in 0..2500 {
        std::fs::create_dir_all(cg.dir.join(format!("n{i}/x/y/z"))).unwrap();
    }
    let made = t.elapsed();
    let last = Instant::now();
    let want = ids_below(&cg.root, &cg.dir);
    let have = wait_map(&mut nft, &want, 30);
    let settled = last.elapsed();
    let missed = want.difference(&have).count();
    let rss = rss_peak_kib(daemon.child.id());
    row(
        "burst: 10,000 nested cgroups (2,500 x mkdir -p a/b/c/d)",
        format!(
            "{missed} missed; all programmed {:.3} s after the last mkdir (mkdirs took {:.3} s); peak RSS {:.1} MiB",
            settled.as_secs_f64(),
            made.as_secs_f64(),
            rss as f64 / 1024.0
        ),
    );
    let t = Instant::now();
    for i in 0..2500 {
        remove_tree(&cg.dir.join(format!("n{i}")));
    }
    let removed = t.elapsed();
    let last = Instant::now();
    let left = wait_map(&mut nft, &Default::default(), 30);
    row(
        "burst: removing those 10,000",
        format!(
            "{} stale elements; map empty {:.3} s after the last rmdir (rmdirs took {:.3} s)",
            left.len(),
            last.elapsed().as_secs_f64(),
            removed.as_secs_f64()
        ),
    );
    daemon.stop();
}

/// Connections per second from a client cgroup, in a fresh pair of test
/// hosts (so no TIME_WAIT or conntrack state carries over), median of 3.
fn cps_run(fill: usize, config: Option<&dyn Fn(&str) -> String>, target: &str) -> u64 {
    let bed = Testbed::new("cps");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("cps");
    let client = cg.mkdir("client");
    let fills = cg.mkdir("fill");
    for i in 0..fill {
        std::fs::create_dir(fills.join(format!("f{i}"))).unwrap();
    }
    let daemon = config.map(|c| start_daemon(&bed.local, &c(&cg.rel)));
    let mut runs: Vec<u64> = (0..3)
        .map(|_| {
            let cmd = format!(
                "echo $$ > {}/cgroup.procs && exec {} {} cps {target} 8080 2000",
                client.display(),
                bed.local.enter(),
                helper()
            );
            sh(&cmd).trim().trim_start_matches("CPS ").parse().unwrap_or(0)
        })
        .collect();
    runs.sort_unstable();
    if let Some((mut d, _cfg)) = daemon {
        d.stop();
    }
    remove_tree(&fills);
    runs[1]
}

fn dataplane() {
    let direct = |rel: &str| format!("version: 1\nrules:\n  - {{match: '^{rel}/', direct: true}}\n");
    let proxy = |rel: &str| {
        format!(
            "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/client', tproxy: px}}\n  - {{match: '^{rel}/', direct: true}}\n"
        )
    };
    let none = cps_run(0, None, REMOTE4);
    let empty = cps_run(0, Some(&direct), REMOTE4);
    let full = cps_run(10_000, Some(&direct), REMOTE4);
    let proxied_empty = cps_run(0, Some(&proxy), REMOTE4);
    let proxied_full = cps_run(10_000, Some(&proxy), REMOTE4);
    row("TCP conn/s, direct, no cgtproxy (no conntrack in the namespace)", none.to_string());
    row("TCP conn/s, direct, cgtproxy with 2 map entries", empty.to_string());
    row("TCP conn/s, direct, cgtproxy with 10,002 map entries", full.to_string());
    row("TCP conn/s, via TPROXY listener, 2 map entries", proxied_empty.to_string());
    row("TCP conn/s, via TPROXY listener, 10,002 map entries", proxied_full.to_string());
}

/// Strict mode's costs: datagrams that leak in the fresh-cgroup race, the
/// first TCP connect of a brand-new cgroup (a held SYN is retransmitted
/// after 1 s), and connections per second.
fn strict_costs() {
    let bed = Testbed::new("strict");
    for strict in [false, true] {
        let cg = TestCgroups::new("sc");
        let dropped = cg.mkdir("drop");
        let direct = cg.mkdir("direct");
        let rules = format!(
            "version: 1\nstrict: {strict}\nrules:\n  - {{match: '^{rel}/drop/', drop: true}}\n  - {{match: '^{rel}/', direct: true}}\n",
            rel = cg.rel
        );
        let (mut daemon, _cfg) = start_daemon(&bed.local, &rules);
        let race = |parent: &std::path::Path, extra: &str| {
            let before = bed.packets_at_9999();
            let out = bed.local.sh(&format!("{} race {} 1000 {REMOTE4} {extra}", helper(), parent.display()));
            std::thread::sleep(Duration::from_millis(200));
            (bed.packets_at_9999() - before, out)
        };
        let (leaked, _) = race(&dropped, "9999");
        let (arrived, _) = race(&direct, "9999");
        let (_, out) = race(&direct, "8080 tcp");
        let mut times: Vec<f64> =
            out.lines().filter_map(|l| l.strip_prefix("T ")).filter_map(|t| t.parse().ok()).collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let slow = times.iter().filter(|t| **t > 500.0).count();
        let mode = if strict { "strict" } else { "default" };
        row(
            &format!(
                "fresh-cgroup race, {mode}: 1000 x (mkdir, move a process in, send 1 datagram at once), drop rule"
            ),
            format!("{leaked} datagrams left the host"),
        );
        row(
            &format!("same race, {mode}, direct rule"),
            format!("{arrived} of 1000 first datagrams arrived ({} held)", 1000 - arrived),
        );
        row(
            &format!("first TCP connect from a brand-new direct cgroup, {mode} (1000 tries)"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {slow} waited for a SYN retransmit",
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                times[times.len() - 1]
            ),
        );
        daemon.stop();
    }
    let direct = |rel: &str| format!("version: 1\nstrict: true\nrules:\n  - {{match: '^{rel}/', direct: true}}\n");
    row("TCP conn/s, direct, strict mode, 10,002 map entries", cps_run(10_000, Some(&direct), REMOTE4).to_string());
}

fn main() {
    if !root("benchmarks") {
        return;
    }
    let max: usize = std::env::var("CGTPROXY_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let ns = NetNs::new("bench");
    enter_netns(&ns);
    // CGTPROXY_BENCH_ONLY=startup,latency,burst,dataplane picks parts.
    let only = std::env::var("CGTPROXY_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    println!("| benchmark | result |\n|---|---|");
    if run("startup") {
        for n in [1_000, 10_000, 100_000].into_iter().filter(|n| *n <= max) {
            startup(&ns, n);
        }
    }
    if run("latency") {
        latency(&ns, false, 0);
        latency(&ns, true, 0);
        latency(&ns, false, 10_000);
        latency(&ns, true, 10_000);
    }
    if run("burst") {
        burst(&ns);
    }
    if run("dataplane") {
        dataplane();
    }
    if run("strict") {
        strict_costs();
    }
}
