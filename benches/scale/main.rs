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

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cgtproxy::netlink::NlSocket;

fn rss_peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The kernel's nf_tables notifications (NFNLGRP_NFTABLES = 7) in the
/// calling thread's network namespace: the bench's clock.
struct Monitor {
    sock: NlSocket,
    buf: Vec<u8>,
    /// The socket buffer overflowed: some notifications were lost.
    overflowed: bool,
}

const NFNLGRP_NFTABLES: u32 = 7;
const NEWSETELEM: u16 = (10 << 8) | 12;

impl Monitor {
    fn open() -> Self {
        let sock = NlSocket::monitor(libc::NETLINK_NETFILTER, &[NFNLGRP_NFTABLES]).expect("nf_tables monitor socket");
        // 100,000 elements are 100,000 notifications at startup: more than
        // the daemon's own 32 MiB.
        let v: libc::c_int = 1 << 30;
        // SAFETY: v outlives the call; the length matches its type.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        Monitor { sock, buf: vec![0; 1 << 20], overflowed: false }
    }

    /// Wait (blocking in poll(2), no busy loop) until every id in `want`
    /// was announced as a new element, or `timeout`; returns the moment the
    /// last one arrived. Ids announced meanwhile are removed from `want`.
    fn wait(&mut self, want: &mut HashSet<u64>, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while !want.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) } <= 0 {
                continue;
            }
            last = self.read(want, libc::MSG_DONTWAIT);
        }
        last.or(Some(Instant::now()))
    }

    /// Process what is queued without waiting.
    fn drain(&mut self, want: &mut HashSet<u64>) {
        while self.read(want, libc::MSG_DONTWAIT).is_some() {}
    }

    fn read(&mut self, want: &mut HashSet<u64>, flags: libc::c_int) -> Option<Instant> {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(self.sock.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), flags) };
        let at = Instant::now();
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                self.overflowed = true;
                return Some(at);
            }
            return None;
        }
        let mut msgs = &self.buf[..n as usize];
        while msgs.len() >= 16 {
            let len = (u32::from_ne_bytes(msgs[..4].try_into().unwrap()) as usize).clamp(16, msgs.len());
            let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if ty == NEWSETELEM {
                for key in setelem_keys(&msgs[20.min(len)..len]) {
                    want.remove(&key);
                }
            }
            msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
        }
        Some(at)
    }
}

/// The 8-byte keys in a NEWSETELEM message (after nfgenmsg):
/// ELEMENTS(3) > LIST_ELEM(1) > KEY(1) > DATA_VALUE(1).
fn setelem_keys(payload: &[u8]) -> Vec<u64> {
    use cgtproxy::netlink::attrs;
    let mut keys = Vec::new();
    for (ty, list) in attrs(payload) {
        if ty != 3 {
            continue;
        }
        for (_, elem) in attrs(list) {
            for (ety, key) in attrs(elem) {
                if ety != 1 {
                    continue;
                }
                for (dty, v) in attrs(key) {
                    if let (1, Ok(b)) = (dty, <[u8; 8]>::try_from(v)) {
                        keys.push(u64::from_ne_bytes(b));
                    }
                }
            }
        }
    }
    keys
}

/// Which implementation a figure is for.
#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Ours,
    Peer,
}

fn peer() -> Option<String> {
    std::env::var("CGTPROXY_BENCH_PEER").ok().filter(|p| !p.is_empty())
}

/// Start `imp` in `ns` for the cgroups below `rel`, everything there going
/// to a TPROXY; does not wait for it (the caller's Monitor does).
fn spawn(imp: Imp, ns: &NetNs, rel: &str, strict: bool) -> (Proc, TempDir) {
    let dir = TempDir::new("bench");
    let cfg = dir.0.join("config.yaml");
    let (text, cmd) = match imp {
        Imp::Ours => (
            format!(
                "version: 1\nstrict: {strict}\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/', tproxy: px}}\n"
            ),
            format!(
                "env CGTPROXY_STATE={} {} {} {} -c {}",
                dir.0.join("state.json").display(),
                std::env::var("CGTPROXY_BENCH_WRAP").unwrap_or_default(),
                ns.enter(),
                bin(),
                cfg.display()
            ),
        ),
        // Its regex must match the whole path; it wants both keys below.
        Imp::Peer => (
            format!(
                "version: 1\ncgroup-root: AUTO\nroute-table: 300\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '{rel}/.*', tproxy: px}}\n"
            ),
            format!("{} {} -c {}", ns.enter(), peer().unwrap(), cfg.display()),
        ),
    };
    std::fs::write(&cfg, text).unwrap();
    (Proc::spawn(&cmd), dir)
}

/// `n` leaf cgroups four levels below the subtree: a{i/1000}/b{i/100%10}/leaf{i}.
fn make_tree(cg: &TestCgroups, n: usize) -> usize {
    for i in 0..n {
        std::fs::create_dir_all(cg.dir.join(format!("a{}/b{}/leaf{i}", i / 1000, (i / 100) % 10))).unwrap();
    }
    ids_below(&cg.root, &cg.dir).len()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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

struct Startup {
    /// Seconds from spawn to the last of the subtree's elements in the kernel.
    secs: Option<f64>,
    missing: usize,
    rss_kib: u64,
    ready_line: String,
}

fn startup_one(imp: Imp, cg: &TestCgroups, ids: &HashSet<u64>, timeout: Duration) -> Startup {
    let ns = NetNs::new("start");
    enter_netns(&ns);
    let mut mon = Monitor::open();
    let mut want = ids.clone();
    let t = Instant::now();
    let (mut daemon, _dir) = spawn(imp, &ns, &cg.rel, false);
    let done = mon.wait(&mut want, timeout);
    let rss_kib = rss_peak_kib(daemon.child.id());
    if imp == Imp::Ours && done.is_some() {
        daemon.wait_for("ready", 10);
    }
    let ready_line = daemon
        .output()
        .lines()
        .find(|l| l.contains("ready"))
        .map(|l| {
            // Its own split: the walk of the cgroup tree, then the kernel
            // (routing, and the one nf_tables commit), in ms.
            l.split_whitespace()
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    match k {
                        "cgroups" => Some(w.to_owned()),
                        "elapsed_ms" | "walk_ms" | "kernel_ms" => Some(format!("{k}={:.1}", v.parse::<f64>().ok()?)),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    daemon.stop();
    Startup { secs: done.map(|d| (d - t).as_secs_f64()), missing: want.len(), rss_kib, ready_line }
}

fn startup(n: usize) {
    let cg = TestCgroups::new(&format!("start{n}"));
    let count = make_tree(&cg, n);
    let ids: HashSet<u64> = ids_below(&cg.root, &cg.dir).into_iter().collect();
    let tree = cgtproxy::cgroup::scan(&cg.root).unwrap().len();
    let show = |s: &Startup, timeout: Duration| match s.secs {
        Some(secs) => format!("{secs:.3} s, peak RSS {:.1} MiB", s.rss_kib as f64 / 1024.0),
        None => format!(
            "not done after {} s: {} of {count} missing; peak RSS {:.1} MiB",
            timeout.as_secs(),
            s.missing,
            s.rss_kib as f64 / 1024.0
        ),
    };
    let ours = startup_one(Imp::Ours, &cg, &ids, Duration::from_secs(60));
    let mut theirs = None;
    let peer_timeout = Duration::from_secs(10);
    if peer().is_some() && n <= 10_000 {
        theirs = Some(startup_one(Imp::Peer, &cg, &ids, peer_timeout));
    }
    let what = format!(
        "startup: {count} matching cgroups ({n} leaves, 4 levels) in the kernel after spawn; \
         {tree} cgroups in the whole tree"
    );
    let mut o = show(&ours, Duration::from_secs(60));
    o.push_str(&format!(" (its log: {})", ours.ready_line));
    let t = theirs.map(|t| {
        let mut s = show(&t, peer_timeout);
        if let (Some(a), Some(b)) = (ours.secs, t.secs) {
            s.push_str(&ratio(a, b));
        }
        s
    });
    row(&what, o, t);
    drop(cg);
}

/// mkdir -> its element announced by the kernel, `samples` times.
fn reaction_one(imp: Imp, strict: bool, existing: usize, samples: usize) -> Option<(Vec<f64>, Vec<f64>, usize)> {
    let ns = NetNs::new("lat");
    enter_netns(&ns);
    let cg = TestCgroups::new("lat");
    let mut want: HashSet<u64> = HashSet::new();
    if existing > 0 {
        make_tree(&cg, existing);
        want = ids_below(&cg.root, &cg.dir).into_iter().collect();
    }
    let mut mon = Monitor::open();
    let probe = cg.mkdir("probe");
    want.insert(cgtproxy::cgroup::id_of(&probe).unwrap());
    let (mut daemon, _dir) = spawn(imp, &ns, &cg.rel, strict);
    let limit = Duration::from_secs(if imp == Imp::Ours { 60 } else { 15 });
    if mon.wait(&mut want, limit).is_none() {
        // The Go implementation never finishes startup with a few thousand.
        daemon.stop();
        return None;
    }
    std::thread::sleep(Duration::from_millis(300));
    mon.drain(&mut want);
    let (mut lat, mut mkdirs, mut missed) = (Vec::new(), Vec::new(), 0);
    for i in 0..samples {
        let d = cg.dir.join(format!("l{i}"));
        let t = Instant::now();
        std::fs::create_dir(&d).unwrap();
        mkdirs.push(t.elapsed().as_secs_f64() * 1e3);
        let mut want = HashSet::from([cgtproxy::cgroup::id_of(&d).unwrap()]);
        match mon.wait(&mut want, Duration::from_secs(2)) {
            Some(at) => lat.push((at - t).as_secs_f64() * 1e3),
            None => missed += 1,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    daemon.stop();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    mkdirs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some((lat, mkdirs, missed))
}

fn reaction(strict: bool, existing: usize) {
    let samples = 1000;
    let show = |(lat, mkdirs, missed): &(Vec<f64>, Vec<f64>, usize)| {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms{} (mkdir(2) itself: p50 {:.3} ms)",
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            if *missed > 0 { format!("; {missed} never (2 s)") } else { String::new() },
            percentile(mkdirs, 0.5),
        )
    };
    let ours = reaction_one(Imp::Ours, strict, existing, samples).expect("startup did not finish within 60 s");
    // The Go implementation has no strict mode.
    let theirs = (peer().is_some() && !strict).then(|| reaction_one(Imp::Peer, strict, existing, samples));
    let t = theirs.map(|t| match t {
        Some(t) => format!(
            "{}; p50 x{:.1}, p99 x{:.1}",
            show(&t),
            percentile(&t.0, 0.5) / percentile(&ours.0, 0.5),
            percentile(&t.0, 0.99) / percentile(&ours.0, 0.99)
        ),
        None => format!("startup with {existing} cgroups not finished after 15 s"),
    });
    row(
        &format!(
            "reaction: mkdir -> element announced by the kernel, {samples} samples, {existing} cgroups mapped before{}",
            if strict { ", strict" } else { "" }
        ),
        show(&ours),
        t,
    );
}

/// 2,500 x `mkdir -p nI/x/y/z` as fast as one process can; then remove them.
fn burst_one(imp: Imp, leaves: usize) -> (usize, Option<f64>, f64, u64) {
    let ns = NetNs::new("burst");
    enter_netns(&ns);
    let cg = TestCgroups::new("burst");
    let mut mon = Monitor::open();
    let probe = cg.mkdir("probe");
    let mut want = HashSet::from([cgtproxy::cgroup::id_of(&probe).unwrap()]);
    let (mut daemon, _dir) = spawn(imp, &ns, &cg.rel, false);
    assert!(mon.wait(&mut want, Duration::from_secs(30)).is_some(), "startup did not finish");
    std::thread::sleep(Duration::from_millis(300));
    mon.drain(&mut want);
    let t = Instant::now();
    for i in 0..leaves {
        std::fs::create_dir_all(cg.dir.join(format!("n{i}/x/y/z"))).unwrap();
    }
    let made = t.elapsed().as_secs_f64();
    let last = Instant::now();
    let mut want: HashSet<u64> = ids_below(&cg.root, &cg.dir).into_iter().collect();
    want.remove(&cgtproxy::cgroup::id_of(&probe).unwrap());
    let total = want.len();
    mon.drain(&mut want);
    let done = if want.is_empty() {
        Some(0.0)
    } else {
        mon.wait(&mut want, Duration::from_secs(10)).map(|at| (at - last).as_secs_f64())
    };
    let rss = rss_peak_kib(daemon.child.id());
    daemon.stop();
    let _ = total;
    (want.len(), done, made, rss)
}

fn burst() {
    let leaves = 2_500;
    let show = |(missed, done, made, rss): &(usize, Option<f64>, f64, u64)| {
        format!(
            "{missed} missed; {}; peak RSS {:.1} MiB (the mkdirs took {made:.3} s)",
            match done {
                Some(s) => format!("all in the kernel {s:.3} s after the last mkdir"),
                None => "not all after 10 s".into(),
            },
            *rss as f64 / 1024.0
        )
    };
    let ours = burst_one(Imp::Ours, leaves);
    let theirs = peer().map(|_| burst_one(Imp::Peer, leaves));
    row(
        &format!("burst: {} nested cgroups ({leaves} x mkdir -p n/x/y/z)", leaves * 4),
        show(&ours),
        theirs.as_ref().map(show),
    );
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
    row1("TCP conn/s, direct, no cgtproxy (no conntrack in the namespace)", none.to_string());
    row1("TCP conn/s, direct, cgtproxy with 2 map entries", empty.to_string());
    row1("TCP conn/s, direct, cgtproxy with 10,002 map entries", full.to_string());
    row1("TCP conn/s, via TPROXY listener, 2 map entries", proxied_empty.to_string());
    row1("TCP conn/s, via TPROXY listener, 10,002 map entries", proxied_full.to_string());
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
    let direct = |rel: &str| format!("version: 1\nstrict: true\nrules:\n  - {{match: '^{rel}/', direct: true}}\n");
    row1("TCP conn/s, direct, strict mode, 10,002 map entries", cps_run(10_000, Some(&direct), REMOTE4).to_string());
}

/// Start a daemon with `text` as its config in `ns` behind `wrap` (a
/// command such as `nice -n -10`); ours is waited for until ready.
fn spawn_with(imp: Imp, ns: &NetNs, text: &str, wrap: &str) -> (Proc, TempDir) {
    let dir = TempDir::new("bench");
    let cfg = dir.0.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let cmd = match imp {
        Imp::Ours => format!(
            "env CGTPROXY_STATE={} {wrap} {} {} -c {}",
            dir.0.join("state.json").display(),
            ns.enter(),
            bin(),
            cfg.display()
        ),
        Imp::Peer => format!("{wrap} {} {} -c {}", ns.enter(), peer().unwrap(), cfg.display()),
    };
    let p = Proc::spawn(&cmd);
    if imp == Imp::Ours {
        p.wait_for("ready", 30);
    } else {
        std::thread::sleep(Duration::from_secs(1));
    }
    (p, dir)
}

/// The fresh-cgroup race on a busy machine (a CPU hog per CPU, at the
/// same priority as everything else): how many first datagrams of brand-new
/// cgroups under a `drop` rule leave the host in the default mode, and
/// how long a brand-new cgroup's first TCP connect takes in strict mode
/// (a SYN held because the daemon was slower than the app is retransmitted
/// after 1 s). `CGTPROXY_BENCH_WRAPS` (`;`-separated) lists the daemon
/// wrappers to compare, for example `;nice -n -10;chrt -r 1`.
fn strict_loaded(tries: usize) {
    let bed = Testbed::new("busy");
    let wraps = std::env::var("CGTPROXY_BENCH_WRAPS").unwrap_or_else(|_| String::from(""));
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let hogs: Vec<Proc> = (0..cpus).map(|_| Proc::spawn("sh -c 'while :; do :; done'")).collect();
    for wrap in wraps.split(';') {
        let shown = if wrap.is_empty() { String::new() } else { format!(", daemon run as `{wrap}`") };
        let leak = |imp: Imp| {
            let cg = TestCgroups::new("busy");
            let dropped = cg.mkdir("drop");
            let text = match imp {
                Imp::Ours => format!(
                    "version: 1\nrules:\n  - {{match: '^{rel}/drop/', drop: true}}\n  - {{match: '^{rel}/', direct: true}}\n",
                    rel = cg.rel
                ),
                Imp::Peer => format!(
                    "version: 1\ncgroup-root: AUTO\nroute-table: 300\nrules:\n  - {{match: '{rel}/drop/.*', drop: true}}\n  - {{match: '{rel}/.*', direct: true}}\n",
                    rel = cg.rel
                ),
            };
            let (mut daemon, _dir) = spawn_with(imp, &bed.local, &text, wrap);
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
        let text = format!("version: 1\nstrict: true\nrules:\n  - {{match: '^{rel}/', direct: true}}\n", rel = cg.rel);
        let (mut daemon, _dir) = spawn_with(Imp::Ours, &bed.local, &text, wrap);
        let out = bed.local.sh(&format!("{} race {} {tries} {REMOTE4} 8080 tcp", helper(), direct.display()));
        daemon.stop();
        let mut times: Vec<f64> =
            out.lines().filter_map(|l| l.strip_prefix("T ")).filter_map(|t| t.parse().ok()).collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let slow = times.iter().filter(|t| **t > 500.0).count();
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

fn main() {
    if !root("benchmarks") {
        return;
    }
    let max: usize = std::env::var("CGTPROXY_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // CGTPROXY_BENCH_ONLY=startup,reaction,burst,dataplane,strict picks parts.
    let only = std::env::var("CGTPROXY_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    let (load1, cgroups) = (
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        cgtproxy::cgroup::scan(&cgroup2_root()).map(|c| c.len()).unwrap_or(0),
    );
    println!(
        "load average at start: {}; cgroups on the machine before the bench: {cgroups}\n",
        load1.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    match peer() {
        Some(p) => println!("| benchmark | cgtproxy | Go implementation ({p}) |\n|---|---|---|"),
        None => println!("| benchmark | result |\n|---|---|"),
    }
    if run("startup") {
        for n in [1_000, 10_000, 100_000].into_iter().filter(|n| *n <= max) {
            startup(n);
        }
    }
    if run("reaction") || run("reaction-idle") {
        reaction(false, 0);
    }
    if run("reaction") {
        reaction(true, 0);
        reaction(false, 10_000);
        reaction(true, 10_000);
    }
    if run("burst") {
        burst();
    }
    let ns = NetNs::new("bench");
    enter_netns(&ns);
    if run("dataplane") {
        dataplane();
    }
    if run("strict") {
        strict_costs();
    }
    if run("strict") || run("busy") {
        strict_loaded(200);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at the end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
