//! The data plane's per-packet cost (issue 22), run as root:
//!
//!     cargo bench --bench dataplane
//!     CGTPROXY_BENCH_ROUNDS=4 CGTPROXY_BENCH_SECS=2 CGTPROXY_BENCH_PEER=/path/to/cgtproxy-go \
//!         cargo bench --bench dataplane
//!     CGTPROXY_BENCH_SETUPS=conntrack,ours CGTPROXY_BENCH_EXTRA="flow-mark-mask: 0" cargo bench --bench dataplane
//!
//! Two test hosts over a veth; an app at cgroup depth 12 sends 64-byte UDP
//! datagrams from one socket, and opens TCP connections (closed with a
//! reset), with a small C program (`benches/dataplane/load.c`, compiled
//! with `cc` here) so that the kernel's path dominates. Rates are per
//! second of the sender's CPU time (the output hooks run in its system
//! calls), so that other load on a shared machine moves them little; the
//! wall-clock rate is printed by load.c too. Each figure is the
//! median of interleaved rounds and is shown as a ratio to the same traffic
//! with no table at all (no conntrack either). Columns: conntrack only
//! (`ct direction reply return`), ours, ours in strict mode, the Go
//! implementation (`CGTPROXY_BENCH_PEER`, default
//! /work/shared/peer/cgtproxy-go when present). Nothing here asserts a
//! time: the figures go in docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    NoTable,
    Conntrack,
    Ours,
    Strict,
    Go,
}

const COLUMNS: [Setup; 5] = [Setup::NoTable, Setup::Conntrack, Setup::Ours, Setup::Strict, Setup::Go];

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peer() -> Option<String> {
    let p = std::env::var("CGTPROXY_BENCH_PEER").unwrap_or_else(|_| "/work/shared/peer/cgtproxy-go".into());
    Path::new(&p).exists().then_some(p)
}

fn compile() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/dataplane/load.c");
    let out = std::env::temp_dir().join(format!("cgtproxy-load-{}", std::process::id()));
    sh(&format!("cc -O2 -o {} {}", out.display(), src.display()));
    out
}

/// The configs: siblings named `x` at levels 3..=12 are direct (so the
/// classify chain has those levels), and with `matched` the app too.
fn config(setup: Setup, rel: &str, app_rel: &str, matched: bool) -> String {
    let mut t = String::from("version: 1\n");
    let anchor = if setup == Setup::Go {
        t.push_str("cgroup-root: AUTO\nroute-table: 300\n");
        ""
    } else {
        "^"
    };
    if setup == Setup::Strict {
        t.push_str("strict: true\n");
    }
    if let (Setup::Ours | Setup::Strict, Ok(extra)) = (setup, std::env::var("CGTPROXY_BENCH_EXTRA")) {
        // Top-level config keys to try a variant (e.g. `flow-mark-mask: 0`).
        t.push_str(&format!("{extra}\n"));
    }
    if setup == Setup::Ours && VARIANT.with(|v| v.get().1) {
        t.push_str("flow-mark-mask: 0\n");
    }
    t.push_str(&format!("rules:\n  - {{match: '{anchor}{rel}/.*/x$', direct: true}}\n"));
    if matched && setup == Setup::Ours && conditional() {
        // Three conditions the UDP load does not meet, before its rule:
        // the packet walks the whole tail-N chain.
        for c in [
            "protocol: tcp, port: 443, drop: true",
            "family: ipv6, drop: true",
            "destination: [203.0.113.0/24], drop: true",
        ] {
            t.push_str(&format!("  - {{match: '{anchor}{app_rel}$', {c}}}\n"));
        }
    }
    if matched {
        t.push_str(&format!("  - {{match: '{anchor}{app_rel}$', direct: true}}\n"));
    }
    t
}

thread_local! {
    /// The row being measured: the app's rule has conditions / the flow
    /// cache is off (`flow-mark-mask: 0`).
    static VARIANT: std::cell::Cell<(bool, bool)> = const { std::cell::Cell::new((false, false)) };
}

fn conditional() -> bool {
    VARIANT.with(|v| v.get().0)
}

struct Bench {
    bed: Testbed,
    load: PathBuf,
    app: PathBuf,
    app_rel: String,
    cg: TestCgroups,
    secs: f64,
}

impl Bench {
    /// Run the load generator in the app's cgroup; its figure.
    fn run(&self, mode: &str) -> f64 {
        let cmd = format!(
            "echo $$ > {}/cgroup.procs && exec {} {} {mode} 192.0.2.2 {} {}",
            self.app.display(),
            self.bed.local.enter(),
            self.load.display(),
            if mode == "udp" { 5002 } else { 5001 },
            self.secs
        );
        // Per second of the sender's CPU time (see load.c).
        sh(&cmd).split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(0.0)
    }

    /// Set up `setup` (with the app matched or not); a guard that tears it down.
    fn setup(&self, setup: Setup, matched: bool) -> Option<(Proc, TempFile)> {
        let ns = &self.bed.local;
        match setup {
            Setup::NoTable => None,
            Setup::Conntrack => {
                ns.sh("nft 'add table inet ctonly; add chain inet ctonly out { type route hook output priority mangle; }; \
                       add rule inet ctonly out ct direction reply return'");
                None
            }
            Setup::Ours | Setup::Strict => Some(start_daemon(ns, &config(setup, &self.cg.rel, &self.app_rel, matched))),
            Setup::Go => {
                let program = peer().expect("peer");
                let d = spawn_daemon(
                    ns,
                    &config(setup, &self.cg.rel, &self.app_rel, matched),
                    &Launch { program: &program, ..Launch::ours() },
                );
                wait_until(10, || ns.try_sh("nft list map inet cgtproxy cgroup-vmap").1.contains("elements"));
                Some(d)
            }
        }
    }

    fn teardown(&self, setup: Setup, guard: Option<(Proc, TempFile)>) {
        if let Some((mut d, _cfg)) = guard {
            d.stop();
        }
        if setup == Setup::Conntrack {
            self.bed.local.sh("nft delete table inet ctonly");
        }
        // Whatever a daemon left (the Go one keeps nothing on SIGTERM, ours
        // neither); conntrack state of the last round goes too.
        let _ = self.bed.local.try_sh("nft delete table inet cgtproxy");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() {
    if !root("the dataplane bench") {
        return;
    }
    let rounds = env_num("CGTPROXY_BENCH_ROUNDS", 4.0) as usize;
    let secs = env_num("CGTPROXY_BENCH_SECS", 2.0);
    // CGTPROXY_BENCH_SETUPS=conntrack,ours,strict,go picks columns (no table always).
    let picked = std::env::var("CGTPROXY_BENCH_SETUPS").unwrap_or_default();
    let pick = |s: Setup| {
        let word = ["none", "conntrack", "ours", "strict", "go"][COLUMNS.iter().position(|c| *c == s).unwrap_or(0)];
        s == Setup::NoTable || picked.is_empty() || picked.split(',').any(|p| p == word)
    };
    let columns: Vec<Setup> =
        COLUMNS.into_iter().filter(|s| (*s != Setup::Go || peer().is_some()) && pick(*s)).collect();
    let bed = Testbed::new("dpb");
    let load = compile();
    let server = Proc::spawn(&format!("{} {} serve 5001", bed.remote.enter(), load.display()));
    server.wait_for("READY", 10);
    bed.remote.sh("nft 'add table inet sink; add chain inet sink pre { type filter hook prerouting priority -300; }; \
         add rule inet sink pre udp dport 5002 drop'");
    let cg = TestCgroups::new("dpb");
    // The app at depth 12 (the subtree is depth 1), a direct sibling `x`
    // at every level from 3 to 12.
    let mut sub = String::new();
    for i in 1..=11 {
        sub.push_str(&format!("a{i}"));
        if i <= 10 {
            cg.mkdir(&format!("{sub}/x"));
        }
        sub.push('/');
    }
    let sub = sub.trim_end_matches('/').to_owned();
    let app = cg.mkdir(&sub);
    let app_rel = format!("{}/{sub}", cg.rel);
    let b = Bench { bed, load, app, app_rel, cg, secs };

    // (row, setup) -> figures of each round
    let rows = [
        "UDP pps, direct rule",
        "UDP pps, no rule matches",
        "TCP conn/s, direct rule",
        "UDP pps, direct rule, no flow cache",
        "UDP pps, direct rule after 3 unmet conditional rules (tail-N)",
        "UDP pps, direct rule after 3 unmet conditional rules, no flow cache",
    ];
    let mut figures: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); columns.len()]; rows.len()];
    for round in 0..rounds {
        for (c, &setup) in columns.iter().enumerate() {
            let g = b.setup(setup, true);
            std::thread::sleep(Duration::from_millis(300));
            figures[0][c].push(b.run("udp"));
            figures[2][c].push(b.run("tcp"));
            b.teardown(setup, g);
            let g = b.setup(setup, false);
            std::thread::sleep(Duration::from_millis(300));
            figures[1][c].push(b.run("udp"));
            b.teardown(setup, g);
            // Conditional rules (issue 20): ours only, same run; with the
            // flow cache, and without it (every packet classified).
            for (row, variant) in [(3, (false, true)), (4, (true, false)), (5, (true, true))] {
                if setup != Setup::Ours {
                    continue;
                }
                VARIANT.with(|v| v.set(variant));
                let g = b.setup(setup, true);
                std::thread::sleep(Duration::from_millis(300));
                figures[row][c].push(b.run("udp"));
                b.teardown(setup, g);
                VARIANT.with(|v| v.set((false, false)));
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let name = |s: Setup| match s {
        Setup::NoTable => "no table",
        Setup::Conntrack => "conntrack only",
        Setup::Ours => "cgtproxy",
        Setup::Strict => "cgtproxy, strict",
        Setup::Go => "Go implementation",
    };
    println!("\n| | {} |", columns.iter().map(|s| name(*s)).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for (r, row) in rows.iter().enumerate() {
        // Rows of ours only are relative to the first row's "no table".
        let base = median(figures[if figures[r][0].is_empty() { 0 } else { r }][0].clone());
        let cells: Vec<String> = (0..columns.len())
            .map(|c| {
                if figures[r][c].is_empty() {
                    return "-".to_owned();
                }
                let m = median(figures[r][c].clone());
                if c == 0 { format!("{m:.0}") } else { format!("{:.2}", m / base) }
            })
            .collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n{rounds} interleaved rounds of {secs} s, medians; no table in absolute figures (per CPU second of the sender), the rest as ratios. \
         {} CPUs, kernel {}, load average before the table: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh("uname -r").trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let _ = std::fs::remove_file(&b.load);
}
