//! What names cost: `Ruleset::build` for a desktop-shaped tree of 100,000
//! cgroups with and without a `drop` rule (with one, each cgroup looks up
//! the binding verdict of its ancestors), and the name-to-path encoding of
//! the walk (`cgname::join`) for valid and invalid names. Pure: needs no
//! root. `cargo bench --bench names`.

use std::time::Instant;

use cgtproxy::cgroup::Cgroup;
use cgtproxy::config::Config;
use cgtproxy::ruleset::Ruleset;

/// 100 users x 1,000 app scopes, each with one child.
fn tree() -> Vec<Cgroup> {
    let mut out = Vec::new();
    let mut id = 1;
    let mut push = |path: String| {
        out.push(Cgroup { level: cgtproxy::cgroup::level_of(&path), path: path.into(), id });
        id += 1;
    };
    push("/user.slice".into());
    for u in 0..100 {
        let user = format!("/user.slice/user-{u}.slice/user@{u}.service");
        push(format!("/user.slice/user-{u}.slice"));
        push(user.clone());
        push(format!("{user}/app.slice"));
        for a in 0..500 {
            let app = format!("{user}/app.slice/app-gnome-org.example.App{a}-{a}.scope");
            push(app.clone());
            push(format!("{app}/sub"));
        }
    }
    out
}

fn median_ms(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let cgroups = tree();
    let plain = "version: 1\ntproxies: {p: {mark: 1, port: 7893}}\nrules:\n  - {match: '^/system\\.slice/mihomo\\.service$', direct: true}\n  - {match: 'App7', direct: true}\n  - {match: '^/user\\.slice/', tproxy: p}\n";
    let with_drop = "version: 1\ntproxies: {p: {mark: 1, port: 7893}}\nrules:\n  - {match: '^/system\\.slice/mihomo\\.service$', direct: true}\n  - {match: '^/user\\.slice/user-1\\d\\.slice/', drop: true}\n  - {match: 'App7', direct: true}\n  - {match: '^/user\\.slice/', tproxy: p}\n";
    println!("Ruleset::build, {} cgroups, median of 7 runs:", cgroups.len());
    for (what, text) in [("no drop/reject rule", plain), ("a drop rule (10 of 100 users)", with_drop)] {
        let cfg = Config::parse(text, "bench.yaml").unwrap();
        let runs: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let rs = Ruleset::build(&cfg, &cgroups);
                std::hint::black_box(rs.elements.len());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!("  {what:<32} {:>8.1} ms", median_ms(runs));
    }
    println!("cgname::join, 1,000,000 names, median of 7 runs:");
    for (what, name) in
        [("valid UTF-8", &b"app-gnome-org.example.App-1234.scope"[..]), ("invalid byte", b"app-\xff-1234.scope")]
    {
        let runs: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..1_000_000 {
                    std::hint::black_box(cgtproxy::cgname::join(std::hint::black_box("/user.slice/app.slice"), name));
                }
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!("  {what:<32} {:>8.1} ns per name", median_ms(runs));
    }
}
