//! Fail-closed figures for docs/benchmarks.md (run as root):
//!
//!     cargo bench --bench failclosed
//!     CGTPROXY_BENCH_GO=/path/to/cgtproxy-go cargo bench --bench failclosed   # side by side
//!
//! A `drop` app sends one UDP datagram every 0.5 ms to 192.0.2.2 through a
//! veth pair (static neighbour, no IPv6 link-local chatter) in a private network namespace; every datagram that gets
//! past the table shows up in the veth's TX counter. Counted around an
//! outside `nft flush ruleset`, a restart (SIGTERM then start) and SIGKILL
//! then start. The restore time after an outside flush is measured on an
//! nf_tables notification socket: from the flush commit's NEWGEN to the
//! daemon's. Idle CPU and wakeups with 200,000 routes in another table come
//! from /proc/PID/stat and /proc/PID/status. Nothing here asserts a figure.

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

use std::time::{Duration, Instant};

const TRIALS: usize = 20;

fn config(rel: &str) -> String {
    format!("version: 1\ncgroup-root: AUTO\nroute-table: 300\nrules:\n  - {{match: '^{rel}/app', drop: true}}\n")
}

fn tx_packets(ns: &NetNs) -> u64 {
    let out = ns.sh("ip -s -o link show dev cgtv0");
    // "... TX: bytes packets errors ... \    N   M ..." : the line after "TX:".
    let fields: Vec<&str> = out.split_whitespace().collect();
    let tx = fields.iter().position(|f| f.starts_with("TX:")).expect("TX counters");
    // Labels follow "TX:" up to a "\", then the values.
    let values: Vec<&str> = fields[tx..].iter().skip_while(|f| **f != "\\").skip(1).copied().collect();
    values[1].parse().expect("tx packets")
}

/// The sender: `--sender ADDR` sends a datagram every 0.5 ms until killed.
fn sender_main(addr: &str) -> ! {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let mut next = Instant::now();
    let mut n: u64 = 0;
    loop {
        let _ = sock.send_to(&n.to_be_bytes(), addr);
        n += 1;
        next += Duration::from_micros(500);
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
}

/// Fields drop in order: the sender first, then the sandbox (its cgroup,
/// then the namespace).
struct Bench {
    _sender: Proc,
    sandbox: Sandbox,
}

impl Bench {
    fn new(tag: &str) -> Self {
        let sandbox = Sandbox::new(tag);
        let (ns, cg) = (&sandbox.ns, &sandbox.cg);
        ns.sh("ip link add cgtv0 type veth peer name cgtv1 && ip link set cgtv0 addrgenmode none && ip link set cgtv1 addrgenmode none && ip link set cgtv1 up && ip link set cgtv0 up && ip addr add 192.0.2.1/24 dev cgtv0 && ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev cgtv0 nud permanent");
        let app = cg.mkdir("app");
        let me = std::env::current_exe().unwrap();
        let sender = Proc::spawn(&format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec {} {} --sender 192.0.2.2:9'",
            app.display(),
            ns.enter(),
            me.display()
        ));
        Bench { _sender: sender, sandbox }
    }

    fn ns(&self) -> &NetNs {
        &self.sandbox.ns
    }

    /// Datagrams that left during `f` (plus `settle` afterwards).
    fn escaped(&self, settle: Duration, f: impl FnOnce()) -> u64 {
        std::thread::sleep(Duration::from_millis(50));
        let before = tx_packets(self.ns());
        f();
        std::thread::sleep(settle);
        tx_packets(self.ns()) - before
    }
}

fn daemon(b: &Bench, program: &str, args: &str) -> (Proc, TempFile) {
    // CGTPROXY_BENCH_WRAP runs the daemon as the unit does, e.g. `chrt -r 1`.
    let wrap = std::env::var("CGTPROXY_BENCH_WRAP").unwrap_or_default();
    spawn_daemon(b.ns(), &config(&b.sandbox.cg.rel), &Launch { program, wrap: &wrap, args, ..Launch::ours() })
}

fn wait_table(ns: &NetNs, d: &Proc) {
    assert!(wait_until(20, || ns.sh("nft list tables").contains("cgtproxy")), "no table:\n{}", d.output());
    std::thread::sleep(Duration::from_millis(200));
}

fn summary(counts: &[u64]) -> String {
    let mut s = counts.to_vec();
    s.sort_unstable();
    format!("min {} / median {} / max {} over {} trials", s[0], s[s.len() / 2], s[s.len() - 1], s.len())
}

fn flush_escapes(b: &Bench, program: &str, extra: &str) -> Vec<u64> {
    let (mut d, _cfg) = daemon(b, program, extra);
    wait_table(b.ns(), &d);
    let mut counts = Vec::new();
    for _ in 0..TRIALS {
        counts.push(b.escaped(Duration::from_millis(100), || {
            b.ns().sh("nft flush ruleset");
        }));
        if !b.ns().sh("nft list tables").contains("cgtproxy") {
            // Not restored (the Go implementation): every later datagram
            // escapes; one trial says it.
            break;
        }
    }
    d.stop();
    let _ = b.ns().try_sh(&format!("{} cleanup", bin()));
    let _ = b.ns().try_sh("nft flush ruleset");
    counts
}

fn restart_escapes(b: &Bench, program: &str, extra: &str, sig: i32) -> Vec<u64> {
    let mut counts = Vec::new();
    let (mut d, mut _cfg) = daemon(b, program, extra);
    wait_table(b.ns(), &d);
    for _ in 0..TRIALS / 2 {
        let mut next = None;
        counts.push(b.escaped(Duration::from_millis(50), || {
            d.signal(sig);
            let _ = d.child.wait();
            let (n, c) = daemon(b, program, extra);
            if program == bin() {
                n.wait_for("ready", 20);
            } else {
                // Another implementation: ready when its table is back.
                wait_until(20, || b.ns().sh("nft list tables").contains("cgtproxy"));
            }
            next = Some((n, c));
        }));
        let (n, c) = next.unwrap();
        d = n;
        _cfg = c;
    }
    d.stop();
    let _ = b.ns().try_sh(&format!("{} cleanup", bin()));
    let _ = b.ns().try_sh("nft flush ruleset");
    counts
}

/// Outside flush -> the daemon's restoring commit (µs): the flush is our
/// own nf_tables commit (`delete table` without a name: every inet table),
/// timed from its ack to the daemon's NEWGEN on a notification socket.
/// Also returns the restore times the daemon logs itself.
fn restore_times(b: &Bench) -> (Vec<f64>, Vec<f64>) {
    let (mut d, _cfg) = daemon(b, bin(), "");
    wait_table(b.ns(), &d);
    let ns = b.ns();
    let daemon_pid = d.child.id();
    let times = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            let mut mon = nft_monitor();
            let mut nft = cgtproxy::nft::Nft::open().unwrap();
            let mut out = Vec::new();
            for _ in 0..TRIALS * 5 {
                std::thread::sleep(Duration::from_millis(20));
                mon.drain();
                let mut batch = nft.batch();
                let m = batch.begin(2, 0, "flush ruleset (inet)");
                batch.end(m);
                nft.commit(batch).unwrap();
                let flushed = Instant::now();
                let deadline = flushed + Duration::from_secs(2);
                let mut restored = false;
                while !restored && Instant::now() < deadline {
                    wait_readable(&mon, Duration::from_millis(100));
                    let at = Instant::now();
                    let _ = mon.each_queued(|datagram| {
                        if !restored && nft_events(datagram).iter().any(|e| e.committed_by() == Some(daemon_pid)) {
                            out.push((at - flushed).as_secs_f64() * 1e6);
                            restored = true;
                        }
                    });
                }
            }
            out
        })
        .join()
        .unwrap()
    });
    d.stop();
    let logged: Vec<f64> = d
        .output()
        .lines()
        .filter_map(|l| l.split("restored table inet cgtproxy in ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    (times, logged)
}

/// (CPU seconds, voluntary + involuntary context switches) of `pid` over `secs`.
fn idle(pid: u32, secs: u64) -> (f64, u64) {
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        // utime, stime: fields 14 and 15 (11 and 12 after the comm).
        (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
    };
    let switches = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let (c0, s0) = (cpu(), switches());
    std::thread::sleep(Duration::from_secs(secs));
    (cpu() - c0, switches() - s0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sender") {
        sender_main(&args[i + 1]);
    }
    if !root("failclosed bench") {
        return;
    }
    let go = std::env::var("CGTPROXY_BENCH_GO").ok();
    println!("| figure | goal | cgtproxy | Go implementation |\n|---|---|---|---|");
    let b = Bench::new("fcflush");
    let ours = summary(&flush_escapes(&b, bin(), ""));
    let theirs = go.as_deref().map(|g| summary(&flush_escapes(&b, g, ""))).unwrap_or_else(|| "-".into());
    println!("| datagrams escaping around an outside `nft flush ruleset` | ≤ 2 | {ours} | {theirs} |");
    let (t, logged) = restore_times(&b);
    let (t, logged) = (ascending(t), ascending(logged));
    println!(
        "| outside flush -> table restored (flush ack to the daemon's NEWGEN) | p99 < 1 ms | p50 {:.0} µs, p99 {:.0} µs ({} flushes) | never restored |",
        percentile(&t, 0.5),
        percentile(&t, 0.99),
        t.len()
    );
    if !logged.is_empty() {
        println!(
            "| restore time the daemon logs (notifications read to commit acked) | - | p50 {:.0} µs, p99 {:.0} µs | - |",
            percentile(&logged, 0.5),
            percentile(&logged, 0.99)
        );
    }
    let keep = summary(&restart_escapes(&b, bin(), "--keep-on-exit", libc::SIGTERM));
    let old = summary(&restart_escapes(&b, bin(), "", libc::SIGTERM));
    let theirs =
        go.as_deref().map(|g| summary(&restart_escapes(&b, g, "", libc::SIGTERM))).unwrap_or_else(|| "-".into());
    println!(
        "| datagrams escaping around a restart (SIGTERM, start) | 0 | {keep} (`--keep-on-exit`, the unit); {old} without it | {theirs} |"
    );
    let kill = summary(&restart_escapes(&b, bin(), "", libc::SIGKILL));
    println!("| datagrams escaping around SIGKILL then start | 0 | {kill} | - |");
    drop(b);

    idle_figures();
}

/// `ip -6 -batch` of `lines` in `ns`.
fn ip6_batch(ns: &NetNs, lines: impl Iterator<Item = String>) {
    let file = TempFile(std::env::temp_dir().join(format!("cgtproxy-routes-{}.txt", std::process::id())));
    std::fs::write(&*file, lines.collect::<String>()).unwrap();
    ns.sh(&format!("ip -6 -batch {}", file.display()));
}

/// Idle with 200,000 routes in another table, while 20,000 of them change,
/// and without CAP_NET_ADMIN.
fn idle_figures() {
    let b = Bench::new("fcidle");
    let route =
        |verb, i: u32| format!("route {verb} blackhole 2001:db8:{:x}:{:x}::/64 table 1000\n", i >> 16, i & 0xffff);
    ip6_batch(b.ns(), (0..200_000u32).map(|i| route("add", i)));
    // cgroup-root: the bench's own subtree, so cgroups other programs
    // create elsewhere on this shared machine do not count as wakeups.
    let text = format!(
        "version: 1\ncgroup-root: {}\nrules:\n  - {{match: '^/app', drop: true}}\n",
        b.sandbox.cg.dir.display()
    );
    let (mut d, _config) = spawn_daemon(b.ns(), &text, &Launch::ours());
    wait_table(b.ns(), &d);
    let (cpu, sw) = idle(d.child.id(), 10);
    println!("| idle CPU over 10 s, 200,000 routes in another table | unmeasurable | {cpu:.2} s | - |");
    println!("| idle wakeups per second (context switches / 10 s) | 0 | {:.1} | - |", sw as f64 / 10.0);
    // The same while 20,000 routes of that table change.
    let pid = d.child.id();
    let (cpu, sw) = std::thread::scope(|s| {
        let h = s.spawn(|| idle(pid, 5));
        std::thread::sleep(Duration::from_millis(500));
        ip6_batch(b.ns(), (0..10_000u32).flat_map(|i| [route("del", i), route("add", i)]));
        h.join().unwrap()
    });
    println!(
        "| while 20,000 route changes in another table (5 s) | 0 | {cpu:.2} s CPU, {sw} context switches (BPF filter) | - |"
    );
    d.stop();

    let (_, out, took) = start_unprivileged(b.ns(), &config(&b.sandbox.cg.rel));
    let line = out.lines().find(|l| l.contains("error")).unwrap_or("").to_owned();
    println!(
        "| without CAP_NET_ADMIN | clear error in < 0.1 s | {:.3} s (setpriv + nsenter included): `{}` | - |",
        took.as_secs_f64(),
        line.trim()
    );
}
