//! Scale and latency figures for docs/benchmarks.md (run as root):
//!
//!     cargo bench --bench scale            # everything
//!     CGTPROXY_BENCH_MAX=10000 cargo bench --bench scale   # skip 100,000
//!     CGTPROXY_BENCH_PEER=/path/to/cgtproxy-go cargo bench --bench scale
//!
//! Prints a Markdown table; with a peer (the Go implementation) each row
//! has both figures, measured in the same run the same way, and their
//! ratio. Nothing here asserts a time: figures vary with the machine and
//! belong in docs, not in pass/fail.
//!
//! The clock: "in the kernel" means the kernel's own nf_tables
//! notification (NEWSETELEM on NFNLGRP_NFTABLES, what `nft monitor`
//! reads) carrying the cgroup's id has arrived; the bench blocks on that
//! socket, it never polls. Startup is timed from the spawn of the daemon,
//! reaction from just before mkdir(2).
//!
//! Parts: `tree` (startup, reaction, burst: the cgroup tree and the kernel
//! map), `traffic` (connections per second, strict mode, the fresh-cgroup
//! race); `monitor` is the clock.

#[path = "../../tests/common/mod.rs"]
mod common;
mod monitor;
mod traffic;
mod tree;

use common::*;

/// Which implementation a figure is for.
#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Ours,
    Peer,
}

fn peer() -> Option<String> {
    std::env::var("CGTPROXY_BENCH_PEER").ok().filter(|p| !p.is_empty())
}

/// `tproxies:` of the configs whose cgroups go to a TPROXY.
const PX: &str = "tproxies: {px: {mark: 3000, port: 7893}}\n";

/// A config for `imp`: `extra` (top-level keys) and `rules`, each a cgroup
/// path prefix and its target (`drop: true`, `tproxy: px`). The Go
/// implementation wants `cgroup-root` and `route-table`, matches its
/// regexes against the whole path, and has no strict mode.
fn config(imp: Imp, extra: &str, rules: &[(&str, &str)]) -> String {
    let mut text = String::from("version: 1\n");
    if imp == Imp::Peer {
        text.push_str("cgroup-root: AUTO\nroute-table: 300\n");
    }
    text.push_str(extra);
    text.push_str("rules:\n");
    for (prefix, target) in rules {
        text.push_str(&match imp {
            Imp::Ours => format!("  - {{match: '^{prefix}', {target}}}\n"),
            Imp::Peer => format!("  - {{match: '{prefix}.*', {target}}}\n"),
        });
    }
    text
}

/// Start `imp` in `ns` with `config_text`, run under `wrap` (a command
/// such as `nice -n -10`); does not wait for it.
fn spawn(imp: Imp, ns: &NetNs, config_text: &str, wrap: &str) -> (Proc, TempFile) {
    let peer = peer();
    let program = match imp {
        Imp::Ours => bin(),
        Imp::Peer => peer.as_deref().expect("CGTPROXY_BENCH_PEER"),
    };
    spawn_daemon(ns, config_text, &Launch { program, wrap, ..Launch::ours() })
}

/// One row: our figure, and with a peer its figure and how they compare.
fn row(what: &str, ours: String, theirs: Option<String>) {
    match theirs {
        Some(t) => println!("| {what} | {ours} | {t} |"),
        None if peer().is_some() => println!("| {what} | {ours} | (not measured) |"),
        None => println!("| {what} | {ours} |"),
    }
}

/// A row only we have a figure for.
fn row1(what: &str, value: String) {
    row(what, value, None)
}

fn ratio(ours: f64, theirs: f64) -> String {
    if ours > 0.0 && theirs.is_finite() { format!(" (x{:.1})", theirs / ours) } else { String::new() }
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    if !root("benchmarks") {
        return;
    }
    let max: usize = std::env::var("CGTPROXY_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // CGTPROXY_BENCH_ONLY=startup,reaction,deep,burst,dataplane,strict picks parts.
    let only = std::env::var("CGTPROXY_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    let cgroups = cgtproxy::cgroup::scan(&cgroup2_root()).map(|c| c.len()).unwrap_or(0);
    println!("load average at start: {}; cgroups on the machine before the bench: {cgroups}\n", load_average());
    match peer() {
        Some(p) => println!("| benchmark | cgtproxy | Go implementation ({p}) |\n|---|---|---|"),
        None => println!("| benchmark | result |\n|---|---|"),
    }
    if run("startup") {
        for n in [1_000, 10_000, 100_000].into_iter().filter(|n| *n <= max) {
            tree::startup(n);
        }
    }
    if run("reaction") || run("reaction-idle") {
        tree::reaction(false, 0);
    }
    if run("reaction") {
        tree::reaction(true, 0);
        tree::reaction(false, 10_000);
        tree::reaction(true, 10_000);
    }
    if run("deep") {
        tree::reaction_deep();
    }
    if run("burst") {
        tree::burst();
    }
    let ns = NetNs::new("bench");
    enter_netns(&ns);
    if run("dataplane") {
        traffic::dataplane();
    }
    if run("strict") {
        traffic::strict_costs();
    }
    if run("strict") || run("busy") {
        traffic::strict_loaded(200);
    }
    println!("\nload average at the end: {}", load_average());
}
