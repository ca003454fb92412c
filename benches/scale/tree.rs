//! The cgroup tree and the kernel map: startup, reaction to one new
//! cgroup, a burst of nested ones.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::monitor::Monitor;
use crate::{Imp, PX, config, peer, ratio, row, spawn};

fn rss_peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Start `imp` in `ns` for the cgroups below `rel`, everything there going
/// to a TPROXY; does not wait for it (the caller's Monitor does). Ours runs
/// under `CGTPROXY_BENCH_WRAP`, if set, with the top-level config keys of
/// `CGTPROXY_BENCH_EXTRA` (e.g. `flow-mark-mask: 0`), if set. With
/// `CGTPROXY_BENCH_CONDITIONS=1`
/// ours gets a conditional rule first (UDP 443 rejected, QUIC-style) and
/// both rules publish to a `cgroupsv2` set of a user table made in `ns`:
/// every cgroup then has a tail class and a published element.
fn spawn_for(imp: Imp, ns: &NetNs, rel: &str, strict: bool) -> (Proc, TempFile) {
    let rule = format!("{rel}/");
    let (extra, wrap) = match imp {
        Imp::Ours => {
            let extra = std::env::var("CGTPROXY_BENCH_EXTRA").map(|e| format!("{e}\n")).unwrap_or_default();
            (format!("strict: {strict}\n{extra}{PX}"), std::env::var("CGTPROXY_BENCH_WRAP").unwrap_or_default())
        }
        Imp::Peer => (PX.to_owned(), String::new()),
    };
    let mode = std::env::var("CGTPROXY_BENCH_CONDITIONS").unwrap_or_default();
    if imp == Imp::Ours && !mode.is_empty() && mode != "0" {
        // 1: conditions and a published set; conditions, publish: one of them.
        let (cond, publish) = match mode.as_str() {
            "conditions" => ("protocol: udp, port: 443, ", ""),
            "publish" => ("", ", nft-set: inet:user:apps"),
            _ => ("protocol: udp, port: 443, ", ", nft-set: inet:user:apps"),
        };
        ns.sh("nft add table inet user && nft add set inet user apps '{ type cgroupsv2; }'");
        let first = format!("{cond}reject: true{publish}");
        let second = format!("tproxy: px{publish}");
        let rules: Vec<(&str, &str)> = if cond.is_empty() {
            vec![(rule.as_str(), second.as_str())]
        } else {
            vec![(rule.as_str(), first.as_str()), (rule.as_str(), second.as_str())]
        };
        return spawn(imp, ns, &config(imp, &extra, &rules), &wrap);
    }
    spawn(imp, ns, &config(imp, &extra, &[(&rule, "tproxy: px")]), &wrap)
}

/// The row's suffix naming the variant.
fn variant() -> String {
    match std::env::var("CGTPROXY_BENCH_CONDITIONS").unwrap_or_default().as_str() {
        "" | "0" => String::new(),
        "conditions" => " (conditions)".into(),
        "publish" => " (published set)".into(),
        _ => " (conditions + published set)".into(),
    }
}

/// `n` leaf cgroups four levels below the subtree: a{i/1000}/b{i/100%10}/leaf{i}.
fn make_tree(cg: &TestCgroups, n: usize) -> usize {
    for i in 0..n {
        std::fs::create_dir_all(cg.dir.join(format!("a{}/b{}/leaf{i}", i / 1000, (i / 100) % 10))).unwrap();
    }
    ids_below(&cg.root, &cg.dir).len()
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
    let (mut daemon, _config) = spawn_for(imp, &ns, &cg.rel, false);
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

pub fn startup(n: usize) {
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
        "startup{}: {count} matching cgroups ({n} leaves, 4 levels) in the kernel after spawn; \
         {tree} cgroups in the whole tree",
        variant()
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

/// A daemon running in a fresh sandbox, with the bench's thread in its
/// namespace. Fields drop in order: the daemon first, the sandbox last.
struct Running {
    daemon: Proc,
    _config: TempFile,
    mon: Monitor,
    sandbox: Sandbox,
}

/// Start `imp` after making `existing` leaf cgroups and a probe; returns
/// once the kernel announced all of them, None when that takes longer than
/// `limit`.
fn started(imp: Imp, tag: &str, strict: bool, existing: usize, limit: Duration) -> Option<Running> {
    let sandbox = Sandbox::entered(tag);
    let cg = &sandbox.cg;
    let mut want: HashSet<u64> = HashSet::new();
    if existing > 0 {
        make_tree(cg, existing);
        want = ids_below(&cg.root, &cg.dir).into_iter().collect();
    }
    let mut mon = Monitor::open();
    want.insert(cgtproxy::cgroup::id_of(&cg.mkdir("probe")).unwrap());
    let (mut daemon, _config) = spawn_for(imp, &sandbox.ns, &cg.rel, strict);
    if mon.wait(&mut want, limit).is_none() {
        daemon.stop();
        return None;
    }
    std::thread::sleep(Duration::from_millis(300));
    mon.drain(&mut want);
    Some(Running { daemon, _config, mon, sandbox })
}

/// mkdir -> its element announced by the kernel, `samples` times.
fn reaction_one(imp: Imp, strict: bool, existing: usize, samples: usize) -> Option<(Vec<f64>, Vec<f64>, usize)> {
    reaction_after(imp, strict, existing, 0, samples)
}

/// [`reaction_one`], after a user nested `deep` levels below the subtree
/// (issue 18: a cgroup deeper than the kernel's `socket cgroupv2` limit of
/// 255 must not slow or stop the classification of the others).
fn reaction_after(
    imp: Imp,
    strict: bool,
    existing: usize,
    deep: usize,
    samples: usize,
) -> Option<(Vec<f64>, Vec<f64>, usize)> {
    // The Go implementation never finishes startup with a few thousand.
    let limit = Duration::from_secs(if imp == Imp::Ours { 60 } else { 15 });
    let mut run = started(imp, "lat", strict, existing, limit)?;
    let nest = (0..deep).fold(run.sandbox.cg.dir.join("nest"), |p, _| p.join("d"));
    if deep > 0 {
        std::fs::create_dir_all(&nest).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let (mut lat, mut mkdirs, mut missed) = (Vec::new(), Vec::new(), 0);
    for i in 0..samples {
        let d = run.sandbox.cg.dir.join(format!("l{i}"));
        let t = Instant::now();
        std::fs::create_dir(&d).unwrap();
        mkdirs.push(t.elapsed().as_secs_f64() * 1e3);
        let mut want = HashSet::from([cgtproxy::cgroup::id_of(&d).unwrap()]);
        match run.mon.wait(&mut want, Duration::from_secs(2)) {
            Some(at) => lat.push((at - t).as_secs_f64() * 1e3),
            None => missed += 1,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    run.daemon.stop();
    if deep > 0 {
        // Deepest first: rmdir(2) takes only empty cgroups.
        for dir in nest.ancestors().take(deep + 1) {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Some((ascending(lat), ascending(mkdirs), missed))
}

/// Reaction p50 with and without 300 nested levels made first (ours only:
/// the Go implementation has no answer to the kernel's level limit).
pub fn reaction_deep() {
    let samples = 1000;
    for deep in [0, 300] {
        let Some((lat, _, missed)) = reaction_after(Imp::Ours, false, 0, deep, samples) else {
            row(&format!("reaction after {deep} nested levels"), "startup did not finish".into(), None);
            continue;
        };
        row(
            &format!("reaction after {deep} nested levels: mkdir -> element announced, {samples} new cgroups"),
            format!(
                "p50 {:.3} ms, p99 {:.3} ms; {} classified, {missed} never (2 s)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.len()
            ),
            None,
        );
    }
}

pub fn reaction(strict: bool, existing: usize) {
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
            "reaction: mkdir -> element announced by the kernel, {samples} samples, {existing} cgroups mapped before{}{}",
            if strict { ", strict" } else { "" },
            variant()
        ),
        show(&ours),
        t,
    );
}

/// 2,500 x `mkdir -p nI/x/y/z` as fast as one process can: (ids missed,
/// seconds from the last mkdir to the last element, seconds of the mkdirs,
/// peak RSS in KiB).
fn burst_one(imp: Imp, leaves: usize) -> (usize, Option<f64>, f64, u64) {
    let mut run = started(imp, "burst", false, 0, Duration::from_secs(30)).expect("startup did not finish");
    let cg = &run.sandbox.cg;
    let t = Instant::now();
    for i in 0..leaves {
        std::fs::create_dir_all(cg.dir.join(format!("n{i}/x/y/z"))).unwrap();
    }
    let made = t.elapsed().as_secs_f64();
    let last = Instant::now();
    let mut want: HashSet<u64> = ids_below(&cg.root, &cg.dir).into_iter().collect();
    want.remove(&cg.id("probe"));
    run.mon.drain(&mut want);
    let done = if want.is_empty() {
        Some(0.0)
    } else {
        run.mon.wait(&mut want, Duration::from_secs(10)).map(|at| (at - last).as_secs_f64())
    };
    let rss = rss_peak_kib(run.daemon.child.id());
    run.daemon.stop();
    (want.len(), done, made, rss)
}

pub fn burst() {
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
