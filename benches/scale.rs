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
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
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
        std::fs::create_dir_all(
            cg.dir
                .join(format!("a{}/b{}/leaf{i}", i / 1000, (i / 100) % 10)),
        )
        .unwrap();
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
    let rss = rss_peak_kib(daemon.child.id());
    let stopping = Instant::now();
    let status = daemon.stop();
    let stop = stopping.elapsed();
    assert!(status.success());
    row(
        &format!("startup, {n} leaves ({count} cgroups, 4 levels)"),
        format!(
            "{:.3} s to ready, {in_map} elements in the map; stop {:.3} s; peak RSS {:.1} MiB; (mkdir of the tree: {:.2} s)",
            ready.as_secs_f64(),
            stop.as_secs_f64(),
            rss as f64 / 1024.0,
            made.as_secs_f64()
        ),
    );
    remove_tree(&cg.dir);
}

fn latency(ns: &NetNs, strict: bool) {
    let cg = TestCgroups::new("lat");
    let (mut daemon, _cfg) = start_daemon(ns, &config(&cg.rel, strict));
    let mut nft = Nft::open().unwrap();
    let mut samples = Vec::new();
    for i in 0..1000 {
        let d = cg.dir.join(format!("l{i}"));
        let t = Instant::now();
        std::fs::create_dir(&d).unwrap();
        let id = cgtproxy::cgroup::id_of(&d).unwrap();
        while !nft.has_cgroup(id).unwrap() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "element never appeared"
            );
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(2));
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    row(
        &format!(
            "reaction mkdir -> element in kernel, idle, 1000 samples{}",
            if strict { ", strict" } else { "" }
        ),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1]
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

fn dataplane() {
    let bed = Testbed::new("cps");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("cps");
    let client = cg.mkdir("client");
    let fill = cg.mkdir("fill");
    for i in 0..10_000 {
        std::fs::create_dir(fill.join(format!("f{i}"))).unwrap();
    }
    let cps = |addr: &str| -> String {
        let cmd = format!(
            "echo $$ > {}/cgroup.procs && exec {} {} cps {addr} 8080 3",
            client.display(),
            bed.local.enter(),
            helper()
        );
        sh(&cmd).trim().trim_start_matches("CPS ").to_owned()
    };
    let empty = cps(REMOTE4);
    let rel = &cg.rel;
    let direct_cfg = format!("version: 1\nrules:\n  - {{match: '^{rel}/', direct: true}}\n");
    let (mut d, _c) = start_daemon(&bed.local, &direct_cfg);
    let direct = cps(REMOTE4);
    d.stop();
    let proxy_cfg = format!(
        "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/client', tproxy: px}}\n  - {{match: '^{rel}/', direct: true}}\n"
    );
    let (mut d, _c) = start_daemon(&bed.local, &proxy_cfg);
    let proxied = cps(REMOTE4);
    d.stop();
    row(
        "TCP connections/s (Python client and servers), no cgtproxy",
        format!("{empty} (to the remote host)"),
    );
    row(
        "same, 10,001 map entries, client direct",
        format!("{direct} (to the remote host)"),
    );
    row(
        "same, 10,001 map entries, client proxied",
        format!("{proxied} (to the local TPROXY listener)"),
    );
    remove_tree(&fill);
}

fn main() {
    if !root("benchmarks") {
        return;
    }
    let max: usize = std::env::var("CGTPROXY_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let ns = NetNs::new("bench");
    enter_netns(&ns);
    println!("| benchmark | result |\n|---|---|");
    for n in [1_000, 10_000, 100_000].into_iter().filter(|n| *n <= max) {
        startup(&ns, n);
    }
    latency(&ns, false);
    latency(&ns, true);
    burst(&ns);
    dataplane();
}
