//! The data model of `top`, pure: what was read from the world at one
//! moment ([`World`]) becomes a [`Sample`] (rows per app and per target,
//! with rates) against the previous reading, kept in a [`Sampler`]. The same
//! value is drawn on the screen and printed by `--once --json`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::appname::app_name;
use crate::ruleset::L4;
use crate::sockdiag::{SockInfo, TcpCounts};
use crate::state::DaemonState;

/// How one cgroup is classified: the target its traffic takes and the rule
/// that decides it (the cgroup's own or its nearest classified ancestor's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub target: String,
    pub rule: Option<usize>,
    /// For a tproxy target: (no_udp, no_ipv6), what it leaves direct.
    pub tproxy: Option<(bool, bool)>,
}

/// Everything `top` reads at one refresh.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Monotonic seconds (only differences matter).
    pub t: f64,
    /// Seconds since the epoch.
    pub time: u64,
    /// Path of every cgroup by id.
    pub paths: HashMap<u64, String>,
    /// The classification of cgroups that have one (an element).
    pub classes: HashMap<u64, Class>,
    pub sockets: Vec<SockInfo>,
    /// (packets, bytes) per target from the per-target rule counters;
    /// empty when the kernel could not be read.
    pub target_counters: BTreeMap<String, (u64, u64)>,
    /// (packets, bytes) per cgroup, with `counters: true`.
    pub cgroup_counters: HashMap<u64, (u64, u64)>,
    pub daemon: Option<DaemonState>,
    /// Why the kernel's counters could not be read.
    pub kernel_unreadable: Option<String>,
    /// The config's bypass ranges, as (v6, first, last).
    pub bypass: Vec<(bool, u128, u128)>,
}

/// Packets and bytes in one direction: totals and per-second rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetRow {
    pub target: String,
    pub apps: usize,
    pub tcp: usize,
    pub udp: usize,
    /// From the target's rule counter (null: the kernel was not readable).
    pub out: Option<Traffic>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conn {
    pub proto: &'static str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: &'static str,
    /// `proxy`, `direct`, `drop`, `reject`, `bypass` (a bypassed address),
    /// `listen` (nothing sent), or the target as named.
    pub route: String,
    pub bytes_out: Option<u64>,
    pub bytes_in: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppRow {
    pub name: String,
    pub path: String,
    pub id: u64,
    /// `none`: no rule covers it (its traffic goes direct).
    pub target: String,
    pub rule: Option<usize>,
    pub tcp: usize,
    pub udp: usize,
    /// Outgoing: the cgroup's element counter with `counters: true`,
    /// else its TCP sockets' tcp_info (payload bytes, segments).
    pub out: Traffic,
    /// Incoming, from tcp_info (TCP only).
    #[serde(rename = "in")]
    pub inbound: Traffic,
    /// `counter` or `tcp_info`: where `out` comes from.
    pub out_source: &'static str,
    pub conns: Vec<Conn>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the epoch.
    pub time: u64,
    /// Seconds the rates are measured over (0: the first reading, no rates).
    pub interval: f64,
    pub daemon: Option<DaemonState>,
    pub kernel_unreadable: Option<String>,
    pub cgroup_counters: bool,
    pub targets: Vec<TargetRow>,
    pub apps: Vec<AppRow>,
}

impl Sample {
    /// The line that says what is wrong with the daemon, if anything.
    pub fn daemon_line(&self) -> Option<String> {
        let Some(d) = &self.daemon else {
            return Some("the daemon is not running: targets are what the config would classify".into());
        };
        if let Some(why) = &d.degraded {
            return Some(format!("the daemon is healing (degraded): {why}"));
        }
        (!d.guard.is_empty()).then(|| format!("proxy-loop guard: {}", d.guard.join("; ")))
    }
}

/// Totals seen by tcp_info for one cgroup: sockets closed since `top`
/// started keep counting.
#[derive(Debug, Clone, Copy, Default)]
struct TcpTotals {
    out_bytes: u64,
    in_bytes: u64,
    out_segs: u64,
    in_segs: u64,
}

impl TcpTotals {
    fn add(&mut self, c: &TcpCounts) {
        self.out_bytes += c.bytes_acked;
        self.in_bytes += c.bytes_received;
        self.out_segs += u64::from(c.segs_out);
        self.in_segs += u64::from(c.segs_in);
    }
}

/// The previous reading, for rates.
#[derive(Debug, Default)]
pub struct Sampler {
    t: Option<f64>,
    /// Each TCP socket's last counts, by cookie, with its cgroup.
    sockets: HashMap<u64, (u64, TcpCounts)>,
    /// Per cgroup: counts of TCP sockets that closed while we watched.
    closed: HashMap<u64, TcpTotals>,
    /// Per cgroup: TCP totals (closed + live) of the last reading.
    tcp: HashMap<u64, TcpTotals>,
    cgroup_counters: HashMap<u64, (u64, u64)>,
    target_counters: BTreeMap<String, (u64, u64)>,
}

fn traffic(now: (u64, u64), before: Option<(u64, u64)>, dt: f64) -> Traffic {
    let rate = |n: u64, b: u64| if dt > 0.0 { n.saturating_sub(b) as f64 / dt } else { 0.0 };
    let (bp, bb) = before.unwrap_or(now);
    Traffic { packets: now.0, bytes: now.1, packets_per_s: rate(now.0, bp), bytes_per_s: rate(now.1, bb) }
}

impl Sampler {
    /// The sample of `w`, with rates against the previous call's reading.
    pub fn sample(&mut self, w: World) -> Sample {
        let dt = self.t.map_or(0.0, |t| (w.t - t).max(0.0));
        // Live TCP counts per cgroup, and sockets that vanished since.
        let mut live: HashMap<u64, (u64, TcpCounts)> = HashMap::with_capacity(w.sockets.len());
        let mut tcp_now: HashMap<u64, TcpTotals> = HashMap::new();
        let mut by_cgroup: HashMap<u64, Vec<&SockInfo>> = HashMap::new();
        for s in &w.sockets {
            let Some(cg) = s.cgroup else { continue };
            by_cgroup.entry(cg).or_default().push(s);
            if let Some(c) = s.tcp {
                live.insert(s.cookie, (cg, c));
                tcp_now.entry(cg).or_default().add(&c);
            }
        }
        for (cookie, (cg, c)) in self.sockets.drain() {
            if !live.contains_key(&cookie) {
                self.closed.entry(cg).or_default().add(&c);
            }
        }
        for (cg, closed) in &self.closed {
            let t = tcp_now.entry(*cg).or_default();
            t.out_bytes += closed.out_bytes;
            t.in_bytes += closed.in_bytes;
            t.out_segs += closed.out_segs;
            t.in_segs += closed.in_segs;
        }

        let mut ids: Vec<u64> = by_cgroup.keys().copied().collect();
        ids.extend(tcp_now.iter().filter(|(_, t)| t.out_segs + t.in_segs > 0).map(|(id, _)| *id));
        ids.extend(w.cgroup_counters.iter().filter(|(_, c)| c.0 > 0).map(|(id, _)| *id));
        ids.sort_unstable();
        ids.dedup();

        let none = Class { target: "none".into(), rule: None, tproxy: None };
        let mut apps = Vec::with_capacity(ids.len());
        for id in ids {
            let path = w.paths.get(&id).cloned().unwrap_or_else(|| format!("#{id}"));
            let class = w.classes.get(&id).unwrap_or(&none);
            let socks = by_cgroup.get(&id).map(Vec::as_slice).unwrap_or_default();
            let tcp = tcp_now.get(&id).copied().unwrap_or_default();
            let tcp_before = self.tcp.get(&id).map(|t| ((t.out_segs, t.out_bytes), (t.in_segs, t.in_bytes)));
            let inbound = traffic((tcp.in_segs, tcp.in_bytes), tcp_before.map(|b| b.1), dt);
            let (out, out_source) = match w.cgroup_counters.get(&id) {
                Some(&c) => (traffic(c, self.cgroup_counters.get(&id).copied(), dt), "counter"),
                None => (traffic((tcp.out_segs, tcp.out_bytes), tcp_before.map(|b| b.0), dt), "tcp_info"),
            };
            let mut conns: Vec<Conn> = socks.iter().map(|s| conn(s, class, &w.bypass)).collect();
            conns.sort_by(|a, b| (a.proto, a.remote, a.local).cmp(&(b.proto, b.remote, b.local)));
            apps.push(AppRow {
                name: app_name(&path).to_owned(),
                target: class.target.clone(),
                rule: class.rule,
                tcp: socks.iter().filter(|s| s.proto == L4::Tcp).count(),
                udp: socks.iter().filter(|s| s.proto == L4::Udp).count(),
                path,
                id,
                out,
                inbound,
                out_source,
                conns,
            });
        }

        let mut targets: BTreeMap<String, TargetRow> = BTreeMap::new();
        let row = |t: &str| TargetRow { target: t.to_owned(), apps: 0, tcp: 0, udp: 0, out: None };
        for (t, c) in &w.target_counters {
            targets.entry(t.clone()).or_insert_with(|| row(t)).out =
                Some(traffic(*c, self.target_counters.get(t).copied(), dt));
        }
        for a in &apps {
            let r = targets.entry(a.target.clone()).or_insert_with(|| row(&a.target));
            r.apps += 1;
            r.tcp += a.tcp;
            r.udp += a.udp;
        }

        self.t = Some(w.t);
        self.sockets = live;
        self.tcp = tcp_now;
        self.cgroup_counters = w.cgroup_counters;
        self.target_counters = w.target_counters;
        Sample {
            time: w.time,
            interval: dt,
            daemon: w.daemon,
            kernel_unreadable: w.kernel_unreadable,
            cgroup_counters: !self.cgroup_counters.is_empty(),
            targets: targets.into_values().collect(),
            apps,
        }
    }
}

/// `ss`'s name of a TCP state (UDP: UNCONN or ESTAB).
pub fn state_name(proto: L4, state: u8) -> &'static str {
    const TCP: [&str; 13] = [
        "?",
        "ESTAB",
        "SYN-SENT",
        "SYN-RECV",
        "FIN-WAIT-1",
        "FIN-WAIT-2",
        "TIME-WAIT",
        "UNCONN",
        "CLOSE-WAIT",
        "LAST-ACK",
        "LISTEN",
        "CLOSING",
        "SYN-RECV",
    ];
    match proto {
        L4::Udp if state == 1 => "ESTAB",
        L4::Udp => "UNCONN",
        L4::Tcp => TCP.get(usize::from(state)).copied().unwrap_or("?"),
    }
}

fn in_bypass(ip: IpAddr, bypass: &[(bool, u128, u128)]) -> bool {
    let (v6, x) = match ip.to_canonical() {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    bypass.iter().any(|&(b6, lo, hi)| b6 == v6 && (lo..=hi).contains(&x))
}

/// Where a socket's packets go under its cgroup's class: the output chain's
/// decisions (bypass, unconnected, a tproxy's no-udp/no-ipv6) in order.
fn route(s: &SockInfo, class: &Class, bypass: &[(bool, u128, u128)]) -> String {
    if s.remote.port() == 0 {
        return "listen".into();
    }
    if in_bypass(s.remote.ip(), bypass) {
        return "bypass".into();
    }
    match class.tproxy {
        Some((no_udp, _)) if no_udp && s.proto == L4::Udp => "direct".into(),
        Some((_, no_ipv6)) if no_ipv6 && s.remote.ip().to_canonical().is_ipv6() => "direct".into(),
        Some(_) => "proxy".into(),
        None if class.target == "none" => "direct".into(),
        None => class.target.clone(),
    }
}

fn conn(s: &SockInfo, class: &Class, bypass: &[(bool, u128, u128)]) -> Conn {
    Conn {
        proto: if s.proto == L4::Tcp { "tcp" } else { "udp" },
        local: s.local,
        remote: s.remote,
        state: state_name(s.proto, s.state),
        route: route(s, class, bypass),
        bytes_out: s.tcp.map(|c| c.bytes_acked),
        bytes_in: s.tcp.map(|c| c.bytes_received),
    }
}
