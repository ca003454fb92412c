//! The data model, the keys and the drawing of `top`, without root: fixed
//! readings become a sample, drawn into a fixed-size TestBackend buffer.

use std::collections::{BTreeMap, HashMap};

use super::keys::{Key, Sort, ViewState};
use super::model::{Class, Sampler, World};
use super::view;
use crate::ruleset::L4;
use crate::sockdiag::{SockInfo, TcpCounts};
use crate::state::DaemonState;

const FIREFOX: u64 = 11;
const GAME: u64 = 12;
const DROPPED: u64 = 13;

fn sock(cg: u64, cookie: u64, proto: L4, remote: &str, out: u64, inb: u64) -> SockInfo {
    SockInfo {
        proto,
        local: "192.0.2.1:40000".parse().unwrap(),
        remote: remote.parse().unwrap(),
        cookie,
        state: if proto == L4::Tcp { 1 } else { 7 },
        uid: 1000,
        cgroup: Some(cg),
        mark: None,
        transparent: None,
        tcp: (proto == L4::Tcp).then_some(TcpCounts {
            bytes_acked: out,
            bytes_received: inb,
            segs_out: (out / 1000) as u32,
            segs_in: (inb / 1000) as u32,
        }),
    }
}

/// A reading at `t` seconds: firefox (proxied) has sent `ff_out` bytes on
/// one TCP connection, the game (direct) has a TCP connection and a UDP
/// socket, the dropped app a UDP socket; target counters grow with `t`.
fn world(t: f64, ff_out: u64) -> World {
    let class = |target: &str, rule, tproxy| Class { target: target.into(), rule: Some(rule), tproxy };
    let n = t as u64;
    World {
        t,
        time: 1_700_000_000 + n,
        paths: HashMap::from([
            (FIREFOX, "/user.slice/app-gnome-org.mozilla.firefox-1234.scope".into()),
            (GAME, "/user.slice/app-steam@2.service".into()),
            (DROPPED, "/user.slice/untrusted.scope".into()),
        ]),
        classes: HashMap::from([
            (FIREFOX, class("tproxy px", 0, Some((false, false)))),
            (GAME, class("direct", 1, None)),
            (DROPPED, class("drop", 2, None)),
        ]),
        sockets: vec![
            sock(FIREFOX, 1, L4::Tcp, "198.51.100.2:443", ff_out, ff_out * 10),
            sock(GAME, 2, L4::Tcp, "203.0.113.5:27015", 5000, 5000),
            sock(GAME, 3, L4::Udp, "203.0.113.5:27015", 0, 0),
            sock(DROPPED, 4, L4::Udp, "0.0.0.0:0", 0, 0),
        ],
        target_counters: BTreeMap::from([
            ("direct".into(), (10 * n, 10_000 * n)),
            ("drop".into(), (2 * n, 200 * n)),
            ("tproxy px".into(), (100 * n, 100_000 * n)),
        ]),
        cgroup_counters: HashMap::new(),
        daemon: Some(DaemonState {
            pid: 4242,
            config: "/etc/cgtproxy/config.yaml".into(),
            guard: vec!["kept direct: /system.slice/mihomo.service (tproxy px listener)".into()],
            ..Default::default()
        }),
        kernel_unreadable: None,
        bypass: vec![(false, 0x7f00_0000, 0x7fff_ffff)],
    }
}

/// Compare with tests/golden/NAME; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

fn sample() -> super::Sample {
    let mut s = Sampler::default();
    s.sample(world(10.0, 100_000));
    s.sample(world(12.0, 300_000))
}

#[test]
fn rates_come_from_two_readings() {
    let s = sample();
    assert_eq!(s.interval, 2.0);
    let ff = s.apps.iter().find(|a| a.id == FIREFOX).unwrap();
    assert_eq!(
        (ff.name.as_str(), ff.target.as_str(), ff.rule, ff.tcp, ff.udp),
        ("org.mozilla.firefox", "tproxy px", Some(0), 1, 0)
    );
    assert_eq!(ff.out.bytes, 300_000);
    assert_eq!(ff.out.bytes_per_s, 100_000.0);
    assert_eq!(ff.inbound.bytes_per_s, 1_000_000.0);
    assert_eq!(ff.out_source, "tcp_info");
    assert_eq!(ff.conns[0].route, "proxy");
    let game = s.apps.iter().find(|a| a.id == GAME).unwrap();
    assert_eq!((game.name.as_str(), game.tcp, game.udp, game.out.bytes_per_s), ("steam", 1, 1, 0.0));
    let px = s.targets.iter().find(|t| t.target == "tproxy px").unwrap();
    assert_eq!((px.apps, px.tcp, px.out.unwrap().packets_per_s, px.out.unwrap().bytes), (1, 1, 100.0, 1_200_000));
    assert_eq!(
        s.daemon_line().unwrap(),
        "proxy-loop guard: kept direct: /system.slice/mihomo.service (tproxy px listener)"
    );
}

#[test]
fn closed_sockets_keep_counting_and_counters_win() {
    let mut sampler = Sampler::default();
    sampler.sample(world(1.0, 1000));
    let mut w = world(2.0, 1000);
    // Firefox's connection closed; the game now has per-cgroup counters.
    w.sockets.retain(|s| s.cookie != 1);
    w.cgroup_counters.insert(GAME, (50, 5000));
    sampler.sample(w);
    let mut w = world(3.0, 1000);
    w.sockets.retain(|s| s.cookie != 1);
    w.cgroup_counters.insert(GAME, (80, 8000));
    let s = sampler.sample(w);
    let ff = s.apps.iter().find(|a| a.id == FIREFOX).expect("traffic keeps the row");
    assert_eq!((ff.tcp, ff.out.bytes, ff.out.bytes_per_s), (0, 1000, 0.0));
    let game = s.apps.iter().find(|a| a.id == GAME).unwrap();
    assert_eq!((game.out_source, game.out.packets_per_s, game.out.bytes_per_s), ("counter", 30.0, 3000.0));
    assert!(s.cgroup_counters);
}

#[test]
fn no_daemon_and_no_privilege_are_said() {
    let mut w = world(1.0, 0);
    w.daemon = None;
    w.kernel_unreadable = Some("reading the kernel needs CAP_NET_ADMIN".into());
    w.target_counters.clear();
    let s = Sampler::default().sample(w);
    assert!(s.daemon_line().unwrap().contains("not running"));
    let text = view::text(&s, &ViewState::default(), 120, 16);
    assert!(text.contains("need CAP_NET_ADMIN"), "{text}");
    assert!(s.targets.iter().all(|t| t.out.is_none()));
}

#[test]
fn keys_filter_sort_select_and_quit() {
    let s = sample();
    let mut v = ViewState::default();
    let names = |v: &ViewState| v.rows(&s).iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    // Grouped by target, then by rate.
    assert_eq!(names(&v), ["steam", "untrusted", "org.mozilla.firefox"]);
    v.key(Key::Char('g'), &s);
    assert_eq!(names(&v), ["org.mozilla.firefox", "steam", "untrusted"]);
    v.key(Key::Char('s'), &s);
    assert_eq!(v.sort, Sort::Name);
    assert_eq!(names(&v), ["org.mozilla.firefox", "steam", "untrusted"]);
    for k in [Key::Char('/'), Key::Char('F'), Key::Char('i'), Key::Char('x'), Key::Backspace, Key::Char('r')] {
        v.key(k, &s);
    }
    assert_eq!(names(&v), ["org.mozilla.firefox"], "the filter applies while typed");
    v.key(Key::Enter, &s);
    assert_eq!((v.filter.as_str(), v.editing.is_none()), ("Fir", true));
    v.key(Key::Enter, &s);
    assert!(v.detail);
    assert_eq!(v.selected.as_deref(), Some("/user.slice/app-gnome-org.mozilla.firefox-1234.scope"));
    v.key(Key::Esc, &s);
    assert!(!v.detail);
    v.key(Key::Esc, &s);
    assert_eq!(v.filter, "");
    v.key(Key::Down, &s);
    v.key(Key::Down, &s);
    assert_eq!(v.selected.as_deref(), Some("/user.slice/untrusted.scope"));
    assert!(!v.quit);
    v.key(Key::Char('q'), &s);
    assert!(v.quit);
    let mut v = ViewState::default();
    v.key(Key::Char('/'), &s);
    v.key(Key::Interrupt, &s);
    assert!(v.quit, "Ctrl-C quits even while typing a filter");
}

#[test]
fn screen_golden() {
    let s = sample();
    let text = view::text(&s, &ViewState::default(), 150, 14);
    golden("top-screen.txt", &text);
    let mut v = ViewState::default();
    v.key(Key::Enter, &s);
    let text = view::text(&s, &v, 150, 14);
    golden("top-connections.txt", &text);
}

#[test]
fn json_names_the_fields() {
    let json = serde_json::to_value(sample()).unwrap();
    let app = &json["apps"][0];
    for key in ["name", "path", "id", "target", "rule", "tcp", "udp", "out", "in", "out_source", "conns"] {
        assert!(app.get(key).is_some(), "apps[].{key} missing: {app}");
    }
    assert_eq!(json["targets"][0]["out"]["packets_per_s"], 10.0);
}
