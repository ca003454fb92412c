//! Traffic: connections per second through the ruleset, strict mode's
//! costs, and the fresh-cgroup race on an idle and on a busy machine.

use std::time::Duration;

use crate::common::*;
use crate::{Imp, PX, config, peer, row, row1, spawn};

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

/// Our config with `extra` keys: cgroups below `rel`/`sub` go to `target`,
/// the rest of `rel` direct.
fn ours(extra: &str, rel: &str, sub: &str, target: &str) -> String {
    config(Imp::Ours, extra, &[(&format!("{rel}/{sub}"), target), (&format!("{rel}/"), "direct: true")])
}

/// Our config with everything below `rel` direct.
fn all_direct(extra: &str, rel: &str) -> String {
    config(Imp::Ours, extra, &[(&format!("{rel}/"), "direct: true")])
}

pub fn dataplane() {
    let direct = |rel: &str| all_direct("", rel);
    let proxy = |rel: &str| ours(PX, rel, "client", "tproxy: px");
    let none = cps_run(0, None, REMOTE4);
    let empty = cps_run(0, Some(&direct), REMOTE4);
    let full = cps_run(10_000, Some(&direct), REMOTE4);
    let proxied_empty = cps_run(0, Some(&proxy), REMOTE4);
    let proxied_full = cps_run(10_000, Some(&proxy), REMOTE4);
    row1("TCP conn/s, direct, no cgtproxy (no conntrack in the namespace)", none.to_string());
    row1("TCP conn/s, direct, cgtproxy with 2 map entries", empty.to_string());
    row1("TCP conn/s, direct, cgtproxy with 10,002 map entries", full.to_string());
    row1("TCP conn/s, via TPROXY listener, 2 map entries", proxied_empty.to_string());
    row1("TCP conn/s, via TPROXY listener, 10,002 map entries", proxied_full.to_string());
}

/// The helper's `race ... tcp` output: each first connect's time in ms
/// (lines `T ms`), ascending, and how many waited for a SYN retransmit.
fn connect_times(out: &str) -> (Vec<f64>, usize) {
    let times = ascending(out.lines().filter_map(|l| l.strip_prefix("T ")).filter_map(|t| t.parse().ok()).collect());
    let slow = times.iter().filter(|t| **t > 500.0).count();
    (times, slow)
}

/// Strict mode's costs: datagrams that leak in the fresh-cgroup race, the
/// first TCP connect of a brand-new cgroup (a held SYN is retransmitted
/// after 1 s), and connections per second.
pub fn strict_costs() {
    let bed = Testbed::new("strict");
    for strict in [false, true] {
        let cg = TestCgroups::new("sc");
        let dropped = cg.mkdir("drop");
        let direct = cg.mkdir("direct");
        let (mut daemon, _cfg) =
            start_daemon(&bed.local, &ours(&format!("strict: {strict}\n"), &cg.rel, "drop/", "drop: true"));
        let race = |parent: &std::path::Path, extra: &str| {
            let before = bed.packets_at_9999();
            let out = bed.local.sh(&format!("{} race {} 1000 {REMOTE4} {extra}", helper(), parent.display()));
            std::thread::sleep(Duration::from_millis(200));
            (bed.packets_at_9999() - before, out)
        };
        let (leaked, _) = race(&dropped, "9999");
        let (arrived, _) = race(&direct, "9999");
        let (_, out) = race(&direct, "8080 tcp");
        let (times, slow) = connect_times(&out);
        let mode = if strict { "strict" } else { "default" };
        row1(
            &format!(
                "fresh-cgroup race, {mode}: 1000 x (mkdir, move a process in, send 1 datagram at once), drop rule"
            ),
            format!("{leaked} datagrams left the host"),
        );
        row1(
            &format!("same race, {mode}, direct rule"),
            format!("{arrived} of 1000 first datagrams arrived ({} held)", 1000 - arrived),
        );
        row1(
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
    let direct = |rel: &str| all_direct("strict: true\n", rel);
    row1("TCP conn/s, direct, strict mode, 10,002 map entries", cps_run(10_000, Some(&direct), REMOTE4).to_string());
}

/// Start `imp` with `text` in `ns` under `wrap`; ours is waited for until
/// ready, the Go implementation (which says nothing) for a second.
fn spawn_ready(imp: Imp, ns: &NetNs, text: &str, wrap: &str) -> (Proc, TempFile) {
    let (p, config) = spawn(imp, ns, text, wrap);
    if imp == Imp::Ours {
        p.wait_for("ready", 30);
    } else {
        std::thread::sleep(Duration::from_secs(1));
    }
    (p, config)
}

/// The fresh-cgroup race on a busy machine (a CPU hog per CPU, at the
/// same priority as everything else): how many first datagrams of brand-new
/// cgroups under a `drop` rule leave the host in the default mode, and
/// how long a brand-new cgroup's first TCP connect takes in strict mode
/// (a SYN held because the daemon was slower than the app is retransmitted
/// after 1 s). `CGTPROXY_BENCH_WRAPS` (`;`-separated) lists the daemon
/// wrappers to compare, for example `;nice -n -10;chrt -r 1`.
pub fn strict_loaded(tries: usize) {
    let bed = Testbed::new("busy");
    let wraps = std::env::var("CGTPROXY_BENCH_WRAPS").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let hogs: Vec<Proc> = (0..cpus).map(|_| Proc::spawn("sh -c 'while :; do :; done'")).collect();
    for wrap in wraps.split(';') {
        let shown = if wrap.is_empty() { String::new() } else { format!(", daemon run as `{wrap}`") };
        let leak = |imp: Imp| {
            let cg = TestCgroups::new("busy");
            let dropped = cg.mkdir("drop");
            let (drop_rule, rest) = (format!("{}/drop/", cg.rel), format!("{}/", cg.rel));
            let text = config(imp, "", &[(&drop_rule, "drop: true"), (&rest, "direct: true")]);
            let (mut daemon, _config) = spawn_ready(imp, &bed.local, &text, wrap);
            let before = bed.packets_at_9999();
            bed.local.sh(&format!("{} race {} {tries} {REMOTE4} 9999", helper(), dropped.display()));
            std::thread::sleep(Duration::from_millis(200));
            let leaked = bed.packets_at_9999() - before;
            daemon.stop();
            leaked
        };
        let ours = leak(Imp::Ours);
        let theirs = peer().map(|_| leak(Imp::Peer));
        row(
            &format!(
                "busy machine ({cpus} CPU hogs): first datagrams of {tries} brand-new `drop` cgroups that left the host, default mode{shown}"
            ),
            format!("{ours} of {tries}"),
            theirs.map(|t| format!("{t} of {tries}")),
        );
        let cg = TestCgroups::new("busy");
        let direct = cg.mkdir("direct");
        let (mut daemon, _config) = spawn_ready(Imp::Ours, &bed.local, &all_direct("strict: true\n", &cg.rel), wrap);
        let out = bed.local.sh(&format!("{} race {} {tries} {REMOTE4} 8080 tcp", helper(), direct.display()));
        daemon.stop();
        let (times, slow) = connect_times(&out);
        row1(
            &format!("busy machine: first TCP connect of {tries} brand-new cgroups, strict mode{shown}"),
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.1} ms, max {:.1} ms; {slow} of {} waited for a SYN retransmit (1 s)",
                percentile(&times, 0.5),
                percentile(&times, 0.9),
                percentile(&times, 0.99),
                times.last().copied().unwrap_or(f64::NAN),
                times.len()
            ),
        );
    }
    drop(hogs);
}
