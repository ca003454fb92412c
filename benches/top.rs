//! What `cgtproxy top` costs per refresh (run as root):
//!
//!     cargo bench --bench top
//!     CGTPROXY_BENCH_APPS=1000 CGTPROXY_BENCH_SOCKETS=10000 cargo bench --bench top
//!
//! In a private network namespace: a table with `counters: true` (the
//! most `top` reads: the per-cgroup element counters as well as the
//! per-target rule counters) for APPS cgroups, and SOCKETS TCP sockets
//! (SOCKETS/2 loopback connections, the client side of each in one of the
//! cgroups). Then 20 refreshes as `top` does them: read the world (cgroup
//! scan, one sock_diag dump with tcp_info, the counters), make the sample,
//! draw a 160x40 screen. Prints the CPU time (user + system) per refresh
//! and per part, and the share of one CPU at one refresh a second. No
//! figure is asserted.

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cgtproxy::cgroup;
use cgtproxy::cmd::top::{Reader, Sampler, ViewState, view};
use cgtproxy::config::Config;
use cgtproxy::nft::Nft;
use cgtproxy::ruleset::Ruleset;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of this process so far (user + system), in seconds.
fn cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn move_self(dir: &std::path::Path) {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).expect("move into a cgroup");
}

fn main() {
    if !root("bench top") {
        return;
    }
    let apps = env("CGTPROXY_BENCH_APPS", 1000);
    let sockets = env("CGTPROXY_BENCH_SOCKETS", 10_000);
    // Two fds per connection, plus slack.
    let lim = libc::rlimit { rlim_cur: (sockets + 1000) as u64, rlim_max: (sockets + 1000) as u64 };
    // SAFETY: a valid resource and a pointer to an rlimit we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0, "raise RLIMIT_NOFILE");
    private_netns();
    let cg = TestCgroups::new("benchtop");
    let here = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let home = cg.root.join(here.lines().find_map(|l| l.strip_prefix("0::")).unwrap().trim_start_matches('/'));
    let dirs: Vec<_> = (0..apps).map(|i| cg.mkdir(&format!("app-org.bench.App{i}@1.service"))).collect();
    let rel = &cg.rel;
    let cfg = Config::parse(
        &format!(
            "version: 1\ncounters: true\n\
             tproxies:\n  px: {{mark: 3000, port: 7893}}\n\
             rules:\n\
             \x20 - {{match: '^{rel}/app-org.bench.App[0-9]*[02468]@', tproxy: px}}\n\
             \x20 - {{match: '^{rel}/', direct: true}}\n"
        ),
        "bench.yaml",
    )
    .unwrap();
    let root = cgroup::resolve_root(&cfg.cgroup_root).unwrap();
    Nft::open().unwrap().apply_full(&Ruleset::build(&cfg, &cgroup::scan(&root).unwrap())).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::with_capacity(sockets);
    for i in 0..sockets / 2 {
        // The client socket's cgroup is the one this process is in when
        // it is created.
        if i % (sockets / 2 / apps.max(1)).max(1) == 0 {
            move_self(&dirs[(i * apps / (sockets / 2)).min(apps - 1)]);
        }
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        held.push(c);
        held.push(s);
    }
    move_self(&home);

    let mut reader = Reader::open(&cfg).unwrap();
    let mut sampler = Sampler::default();
    let v = ViewState::default();
    let _ = sampler.sample(reader.read().unwrap());
    let rounds = 20;
    let (mut t_read, mut t_sample, mut t_draw) = (0.0, 0.0, 0.0);
    let mut last = None;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(50));
        let a = cpu();
        let w = reader.read().unwrap();
        let b = cpu();
        let s = sampler.sample(w);
        let c = cpu();
        let text = view::text(&s, &v, 160, 40);
        let d = cpu();
        t_read += b - a;
        t_sample += c - b;
        t_draw += d - c;
        std::hint::black_box(text);
        last = Some(s);
    }
    let s = last.unwrap();
    let socks: usize = s.apps.iter().map(|a| a.tcp + a.udp).sum();
    let per = |t: f64| t / rounds as f64 * 1e3;
    let total = per(t_read + t_sample + t_draw);
    println!("cgtproxy top, {apps} app cgroups, {} rows, {socks} sockets seen, {rounds} refreshes", s.apps.len());
    println!("| part | CPU ms per refresh |");
    println!("|---|---|");
    println!("| read (cgroup scan, sock_diag dump with tcp_info, counters) | {:.2} |", per(t_read));
    println!("| sample (rates, rows) | {:.2} |", per(t_sample));
    println!("| draw (160x40 screen) | {:.2} |", per(t_draw));
    println!("| total | {total:.2} ({:.1}% of one CPU at 1 refresh/s) |", total / 10.0);
    drop(held);
}
