//! The running daemon follows the cgroup tree exactly: bursts, random
//! churn, inotify overflow, outside flushes, reload, restart after SIGKILL.

mod common;
use common::*;

use std::collections::BTreeSet;

use cgtproxy::nft::Nft;
use cgtproxy::ruleset::Verdict;

fn config(rel: &str, target: &str) -> String {
    format!(
        "version: 1\nroute-table: 300\ntproxies:\n  px: {{mark: 3000, port: 7893}}\nrules:\n  - {{match: '^{rel}/', {target}}}\n"
    )
}

struct Setup {
    ns: NetNs,
    cg: TestCgroups,
    daemon: Proc,
    config: TempFile,
    nft: Nft,
}

fn setup(tag: &str, target: &str, pre: &[&str]) -> Setup {
    let Sandbox { ns, cg } = Sandbox::new(tag);
    for p in pre {
        cg.mkdir(p);
    }
    let (daemon, config) = start_daemon(&ns, &config(&cg.rel, target));
    enter_netns(&ns);
    let nft = Nft::open().unwrap();
    Setup { ns, cg, daemon, config, nft }
}

impl Setup {
    fn expected(&self) -> BTreeSet<u64> {
        ids_below(&self.cg.root, &self.cg.dir)
    }

    fn assert_in_step(&mut self, secs: u64, what: &str) {
        let want = self.expected();
        let have = wait_map(&mut self.nft, &want, secs);
        let missing = want.difference(&have).count();
        let extra = have.difference(&want).count();
        assert!(
            missing == 0 && extra == 0,
            "{what}: {missing} cgroups missing from the map, {extra} stale elements (of {})\n{}",
            want.len(),
            tail(&self.daemon.output())
        );
    }

    fn stop(mut self) {
        let status = self.daemon.stop();
        assert!(status.success(), "daemon exit {status}:\n{}", tail(&self.daemon.output()));
        assert_clean(&self.ns);
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn nested_mkdir_bursts() {
    if !root("nested_mkdir_bursts") {
        return;
    }
    let mut s = setup("burst", "tproxy: px", &[]);
    // 200 x `mkdir -p dI/a/b/c/d`: 1,000 cgroups, most created inside
    // directories that did not exist a moment before.
    for i in 0..200 {
        std::fs::create_dir_all(s.cg.dir.join(format!("d{i}/a/b/c/d"))).unwrap();
    }
    s.assert_in_step(10, "after a nested burst");
    assert_eq!(s.expected().len(), 1000);
    let map = s.nft.cgroup_map().unwrap();
    assert!(map.values().all(|v| *v == Verdict::Tproxy(3000)));
    for i in 0..200 {
        remove_tree(&s.cg.dir.join(format!("d{i}")));
    }
    s.assert_in_step(10, "after removing the burst");
    s.stop();
}

#[test]
fn random_churn_matches_filesystem() {
    if !root("random_churn_matches_filesystem") {
        return;
    }
    let mut s = setup("churn", "direct: true", &["seed"]);
    let mut dirs: Vec<std::path::PathBuf> = vec![s.cg.dir.join("seed")];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for op in 0..4000 {
        let r = next();
        if r % 3 != 0 || dirs.len() < 2 {
            let parent = dirs[(next() % dirs.len() as u64) as usize].clone();
            let d = parent.join(format!("c{op}"));
            if std::fs::create_dir(&d).is_ok() {
                dirs.push(d);
            }
        } else {
            // Remove a random directory (never the seed) with its subtree.
            let i = 1 + (next() % (dirs.len() as u64 - 1)) as usize;
            let victim = dirs[i].clone();
            remove_tree(&victim);
            dirs.retain(|d| !d.starts_with(&victim));
        }
    }
    s.assert_in_step(10, "after 4,000 random creates and deletes");
    s.stop();
}

#[test]
fn inotify_overflow_is_recovered() {
    if !root("inotify_overflow_is_recovered") {
        return;
    }
    let mut s = setup("overflow", "direct: true", &[]);
    let queue: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .map(|t| t.trim().parse().unwrap_or(16384))
        .unwrap_or(16384);
    // Parents first, so they are watched: every child is then one event.
    let per_dir = 1000;
    let parents: Vec<_> = (0..(queue + 2000).div_ceil(per_dir)).map(|i| s.cg.mkdir(&format!("p{i}"))).collect();
    s.assert_in_step(5, "parents");
    s.daemon.signal(libc::SIGSTOP);
    for parent in parents {
        for j in 0..per_dir {
            std::fs::create_dir(parent.join(format!("c{j}"))).unwrap();
        }
    }
    s.daemon.signal(libc::SIGCONT);
    s.assert_in_step(60, "after an inotify queue overflow");
    assert!(s.daemon.output().contains("overflowed"), "no overflow was reported:\n{}", tail(&s.daemon.output()));
    s.stop();
}

#[test]
fn outside_flush_is_restored() {
    if !root("outside_flush_is_restored") {
        return;
    }
    let mut s = setup("heal", "tproxy: px", &["a", "b/c"]);
    s.assert_in_step(5, "at start");
    s.ns.sh("nft flush ruleset");
    let started = std::time::Instant::now();
    s.assert_in_step(5, "after nft flush ruleset");
    let elapsed = started.elapsed();
    assert!(s.ns.sh("nft list chain inet cgtproxy classify").contains("socket cgroupv2 level 2"));
    assert!(s.daemon.output().contains("changed by another program"));
    eprintln!("restored after flush in {elapsed:?}");
    // Deleting the chain's rules only (firewalld-style partial change).
    s.ns.sh("nft flush chain inet cgtproxy classify");
    let restored =
        wait_until(2, || s.ns.sh("nft list chain inet cgtproxy classify").contains("socket cgroupv2 level 2"));
    assert!(restored, "classify chain not restored:\n{}", tail(&s.daemon.output()));
    // And the routing rule.
    s.ns.sh("ip rule del fwmark 3000 lookup 300");
    let restored = wait_until(2, || s.ns.sh("ip rule show").contains("fwmark 0xbb8 lookup 300"));
    assert!(restored, "routing rule not restored:\n{}", tail(&s.daemon.output()));
    s.stop();
}

/// Another program's large commit overruns the daemon's notification
/// socket (about 100 bytes of notification per element, 32 MiB of buffer:
/// ENOBUFS): the daemon says so,
/// checks its table and routing, and keeps healing afterwards.
#[test]
fn lost_notifications_are_noticed_and_healing_goes_on() {
    if !root("lost_notifications_are_noticed_and_healing_goes_on") {
        return;
    }
    let mut s = setup("enobufs", "tproxy: px", &["a"]);
    s.assert_in_step(5, "at start");
    let file = TempFile(std::env::temp_dir().join(format!("cgtproxy-enobufs-{}.nft", std::process::id())));
    let mut text = String::from("add table inet cgtp-other\nadd set inet cgtp-other s { type mark; }\n");
    for chunk in (1..=500_000u32).collect::<Vec<_>>().chunks(1000) {
        let list: Vec<String> = chunk.iter().map(|m| m.to_string()).collect();
        text.push_str(&format!("add element inet cgtp-other s {{ {} }}\n", list.join(", ")));
    }
    std::fs::write(&*file, text).unwrap();
    // Stopped while the kernel queues the notifications, so nothing reads
    // them before the buffer is full.
    s.daemon.signal(libc::SIGSTOP);
    s.ns.sh(&format!("nft -f {}", file.display()));
    s.daemon.signal(libc::SIGCONT);
    s.daemon.wait_for("kernel notifications were lost (ENOBUFS)", 20);
    s.assert_in_step(5, "after the overrun");
    s.ns.sh("nft delete table inet cgtp-other");
    // Still listening: an outside flush is restored as before.
    s.ns.sh("nft flush ruleset");
    s.assert_in_step(5, "after nft flush ruleset following the overrun");
    let restored = wait_until(2, || s.ns.sh("nft list chain inet cgtproxy classify").contains("socket cgroupv2 level"));
    assert!(restored, "classify chain not restored:\n{}", tail(&s.daemon.output()));
    s.stop();
}

#[test]
fn reload_valid_and_invalid() {
    if !root("reload_valid_and_invalid") {
        return;
    }
    let mut s = setup("reload", "direct: true", &["x", "y/z"]);
    s.assert_in_step(5, "at start");
    assert!(s.nft.cgroup_map().unwrap().values().all(|v| *v == Verdict::Direct));

    std::fs::write(&*s.config, config(&s.cg.rel, "drop: true")).unwrap();
    s.daemon.signal(libc::SIGHUP);
    s.daemon.wait_for("reloaded", 10);
    let map = s.nft.cgroup_map().unwrap();
    assert_eq!(map.len(), 3);
    assert!(map.values().all(|v| *v == Verdict::Drop), "{map:?}");

    std::fs::write(&*s.config, "version: 1\nrules:\n  - {match: '(', direct: true}\n").unwrap();
    s.daemon.signal(libc::SIGHUP);
    let line = s.daemon.wait_for("reload refused", 10);
    assert!(line.contains("bad regex"), "{line}");
    let map = s.nft.cgroup_map().unwrap();
    assert!(map.len() == 3 && map.values().all(|v| *v == Verdict::Drop), "the old config must stay in force");
    // Still following the tree on the old config.
    s.cg.mkdir("w");
    s.assert_in_step(5, "after a refused reload");
    // A new mark and route table: the new routing is added, the old removed.
    let moved = format!(
        "version: 1\nroute-table: 301\ntproxies:\n  px: {{mark: 3001, port: 7893}}\nrules:\n  - {{match: '^{}/', tproxy: px}}\n",
        s.cg.rel
    );
    std::fs::write(&*s.config, moved).unwrap();
    s.daemon.signal(libc::SIGHUP);
    s.daemon.wait_for("reloaded", 10);
    for fam in ["-4", "-6"] {
        let rules = s.ns.sh(&format!("ip {fam} rule show"));
        assert!(rules.contains("fwmark 0xbb9 lookup 301") && !rules.contains("lookup 300"), "{rules}");
        assert!(s.ns.sh(&format!("ip {fam} route show table 301")).contains("local default dev lo"));
        assert_eq!(s.ns.sh(&format!("ip {fam} route show table 300")).trim(), "");
    }
    assert!(s.nft.cgroup_map().unwrap().values().all(|v| *v == Verdict::Tproxy(3001)));
    s.stop();
}

#[test]
fn restart_after_sigkill_replaces_state() {
    if !root("restart_after_sigkill_replaces_state") {
        return;
    }
    let mut s = setup("kill", "tproxy: px", &["a"]);
    s.assert_in_step(5, "at start");
    s.daemon.signal(libc::SIGKILL);
    let _ = s.daemon.child.wait();
    assert!(s.ns.sh("nft list tables").contains("cgtproxy"), "a killed instance leaves its table");
    s.cg.mkdir("b");
    let (daemon, config) = start_daemon(&s.ns, &config(&s.cg.rel, "tproxy: px"));
    s.daemon = daemon;
    s.config = config;
    s.assert_in_step(5, "after restart");
    let rules = s.ns.sh("ip rule show");
    assert_eq!(rules.matches("fwmark 0xbb8 lookup 300").count(), 1, "{rules}");
    s.stop();
}
