//! `cgtproxy status`: the daemon, the table, the routing and every
//! classified cgroup with its rule and target, read over netlink
//! ([`read`]) and rendered as text ([`Status::text`]) or JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde::Serialize;

use super::world::{InspectError, netns_note, privileged, scan};
use crate::cgroup::{self, Cgroup};
use crate::config::Config;
use crate::nft::Nft;
use crate::route::Routes;
use crate::ruleset::{Ruleset, Verdict};
use crate::state::{self, DaemonState};

#[derive(Debug, Serialize)]
pub struct CgroupStatus {
    pub path: String,
    pub id: u64,
    pub target: String,
    /// The rule that matches the path under the current config.
    pub rule: Option<usize>,
    /// Packets and bytes this cgroup's classification matched (`counters: true`).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub daemon: Option<DaemonState>,
    /// The daemon runs in another network namespace than this command: the
    /// table and routing seen here are not its own.
    pub other_netns: bool,
    /// Why the kernel's table could not be read (no CAP_NET_ADMIN); the
    /// `cgroups` are then what the config classifies, not the kernel's.
    pub kernel_unreadable: Option<String>,
    pub table: bool,
    pub routing: bool,
    pub route_table: u32,
    pub cgroups: Vec<CgroupStatus>,
    /// Cgroups per target.
    pub totals: BTreeMap<String, usize>,
    /// (packets, bytes) per target, with `counters: true`.
    pub traffic: BTreeMap<String, (u64, u64)>,
    /// Map elements whose cgroup no longer exists.
    pub stale: usize,
    /// Gateway entries, with what the kernel counted for them.
    pub gateway: Vec<GatewayStatus>,
    /// How bridged clients escape br_netfilter (gateway tproxy entries only).
    pub gateway_bridge: Option<String>,
    /// Other programs' forward-path rules that gateway tproxy entries skip.
    pub gateway_forward: Option<String>,
    /// What VPN-related sysctls break for forwarded TPROXY.
    pub gateway_vpn: Vec<String>,
    /// What the text says about the daemon's network namespace.
    #[serde(skip)]
    pub netns_note: Option<String>,
    /// Why the state file could not be read, when there is no daemon.
    #[serde(skip)]
    pub state_unreadable: Option<String>,
    /// Seconds since the epoch when read (for the daemon's uptime).
    #[serde(skip)]
    pub now: u64,
}

#[derive(Debug, Serialize)]
pub struct GatewayStatus {
    pub index: usize,
    pub line: u64,
    pub conditions: String,
    pub target: String,
    /// Whether the kernel holds its rules.
    pub present: bool,
    /// With `counters: true`: first packets of new flows it classified plus
    /// frames the bridge table brouted for it.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

/// The gateway entries next to the kernel's per-rule counters.
pub fn gateway_status(
    cfg: &Config,
    nft: &mut Nft,
    table: bool,
    readable: bool,
) -> Result<Vec<GatewayStatus>, InspectError> {
    use crate::nft::sys::{NFPROTO_BRIDGE, NFPROTO_INET};
    use crate::ruleset::gateway::rule_entries;
    if cfg.gateway.is_empty() {
        return Ok(Vec::new());
    }
    let mut rs = Ruleset::new(cfg);
    // Without CAP_NET_ADMIN the kernel cannot be read: entries only.
    let inet = if table && readable {
        nft.rule_counters(NFPROTO_INET, crate::names::CHAIN_GATEWAY_CLASSIFY)?
    } else {
        Vec::new()
    };
    let bridge = if readable { nft.rule_counters(NFPROTO_BRIDGE, crate::names::CHAIN_PREROUTING)? } else { Vec::new() };
    rs.broute = !bridge.is_empty();
    let mut sums: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut counted = false;
    for (rules, is_bridge) in [(&inet, false), (&bridge, true)] {
        for (entry, counter) in rule_entries(&rs, is_bridge).into_iter().zip(rules.iter()) {
            if let (Some(i), Some((p, b))) = (entry, counter) {
                counted = true;
                let t = sums.entry(i).or_default();
                t.0 += p;
                t.1 += b;
            }
        }
    }
    let present = inet.len() == rule_entries(&rs, false).len();
    Ok(cfg
        .gateway
        .iter()
        .map(|e| {
            let sum = counted.then(|| sums.get(&e.index).copied().unwrap_or_default());
            GatewayStatus {
                index: e.index,
                line: e.line,
                conditions: e.conditions(),
                target: e.target.to_string(),
                present,
                packets: sum.map(|s| s.0),
                bytes: sum.map(|s| s.1),
            }
        })
        .collect())
}

/// Read the world for `status`.
pub fn read(cfg: &Config) -> Result<Status, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let all = scan(&root)?;
    let by_id: HashMap<u64, &Cgroup> = all.iter().map(|c| (c.id, c)).collect();
    let mut nft = Nft::open()?;
    let (table, map, kernel_unreadable) = match privileged(nft.table_exists())? {
        Ok(false) => (false, BTreeMap::new(), None),
        Ok(true) => (true, nft.cgroup_map_counted()?, None),
        Err(why) => {
            // What the config classifies, without counters: the best that
            // can be shown without privilege.
            let want = Ruleset::build(cfg, &all);
            (false, want.elements.iter().map(|(id, e)| (*id, (e.verdict, None))).collect(), Some(why))
        }
    };
    let marks: Vec<u32> = cfg.tproxies.values().map(|t| t.mark).collect();
    let routing = Routes::open()?.present(&marks, cfg.route_table)?;
    let mut cgroups = Vec::new();
    let mut totals = BTreeMap::new();
    let mut traffic: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stale = 0;
    for (id, (verdict, counter)) in map {
        let Some(cg) = by_id.get(&id) else {
            stale += 1;
            continue;
        };
        if verdict == Verdict::Continue && kernel_unreadable.is_some() {
            continue;
        }
        // The config's view of a matched cgroup, walked once for both uses.
        let own = cfg.classify(&cg.path);
        let view = own.map(|_| crate::ruleset::path_view::view(cfg, &cg.path));
        let target = match (verdict, &view) {
            // Which rule takes which packets, as the config says.
            (Verdict::Tail(_), Some(view)) => {
                view.describe(cfg).map_or_else(|| verdict.describe(cfg), |t| format!("conditional: {t}"))
            }
            _ => verdict.describe(cfg),
        };
        *totals.entry(target.clone()).or_insert(0) += 1;
        if let Some((packets, bytes)) = counter {
            let t = traffic.entry(target.clone()).or_insert((0, 0));
            t.0 += packets;
            t.1 += bytes;
        }
        // The rule that decides: a drop/reject above binds a matched cgroup.
        let bound = view.and_then(|v| v.whole).and_then(|end| cfg.classify(&cg.path[..end]));
        let rule = bound.or(own).map(|r| r.index);
        let (packets, bytes) = (counter.map(|c| c.0), counter.map(|c| c.1));
        cgroups.push(CgroupStatus { path: cg.path.to_string(), id, target, rule, packets, bytes });
    }
    cgroups.sort_by(|a, b| a.path.cmp(&b.path));
    let daemon = state::read();
    let netns_note = netns_note(daemon.as_ref(), crate::netns::own());
    let other_netns = netns_note.is_some();
    let state_unreadable = if daemon.is_none() { state::unreadable() } else { None };
    let readable = kernel_unreadable.is_none();
    let gateway = gateway_status(cfg, &mut nft, table, readable)?;
    let gateway_bridge = if !cfg.gateway.iter().any(|e| matches!(e.target, crate::config::Target::Tproxy(_))) {
        None
    } else {
        match daemon.as_ref().map(|d| d.gateway_bridge.clone()).filter(|m| !m.is_empty()) {
            Some(m) => Some(m),
            None if readable => Some(crate::bridge::probe(&mut nft).line(cfg)),
            None => None,
        }
    };
    let gateway_forward = if gateway_bridge.is_some() && readable {
        crate::bridge::skipped_forward_rules(&nft.foreign_forward_rules().unwrap_or_default())
    } else {
        None
    };
    let gateway_vpn = if gateway_bridge.is_some() { crate::bridge::vpn_warnings() } else { Vec::new() };
    Ok(Status {
        gateway_vpn,
        gateway_forward,
        daemon,
        other_netns,
        kernel_unreadable,
        table,
        routing,
        route_table: cfg.route_table,
        cgroups,
        totals,
        traffic,
        stale,
        gateway,
        gateway_bridge,
        netns_note,
        state_unreadable,
        now: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |n| n.as_secs()),
    })
}

impl Status {
    /// The text `cgtproxy status` prints.
    pub fn text(&self, cfg: &Config) -> String {
        let mut s = String::new();
        match &self.daemon {
            Some(d) => {
                let up = self.now.saturating_sub(d.started);
                let _ = writeln!(
                    s,
                    "daemon: running, pid {}, config {}, up {}s, {} reloads, {} rebuilds, startup {:.1} ms",
                    d.pid, d.config, up, d.reloads, d.resyncs, d.startup_ms
                );
                if let Some(why) = &d.degraded {
                    let why = crate::cgname::escape(why);
                    let _ = writeln!(s, "daemon: DEGRADED: {why} (the last good kernel state stays; retrying)");
                }
                if d.keep_on_exit {
                    s.push_str("daemon: keeps its table and routing when stopped (`cgtproxy cleanup` removes them)\n");
                }
            }
            None => match &self.state_unreadable {
                Some(why) => {
                    let _ = writeln!(s, "daemon: unknown: cannot read its state file {why}");
                }
                None => s.push_str("daemon: not running (no live state file)\n"),
            },
        }
        if let Some(note) = &self.netns_note {
            let _ = writeln!(s, "NOTE: {note}");
        }
        if let Some(d) = self.daemon.as_ref().filter(|d| !d.guard.is_empty()) {
            s.push_str("proxy guard:\n");
            for line in &d.guard {
                // The state file's lines hold cgroup names: shown escaped.
                let _ = writeln!(s, "  {}", crate::cgname::escape(line));
            }
        }
        if let Some(d) = self.daemon.as_ref().filter(|d| !d.published.is_empty()) {
            s.push_str("published to your sets (nft-set):\n");
            for line in &d.published {
                let _ = writeln!(s, "  {line}");
            }
        }
        if let Some(why) = &self.kernel_unreadable {
            let _ = writeln!(s, "table inet cgtproxy: not shown: {why}");
            let _ = writeln!(s, "  (the cgroups below are what the config classifies now, not read from the kernel)");
        } else if !self.table {
            s.push_str("table inet cgtproxy: ABSENT (no traffic is classified)\n");
        } else {
            let _ = writeln!(s, "table inet cgtproxy: present, {} classified cgroups", self.cgroups.len());
        }
        let marks: Vec<String> = cfg.tproxies.values().map(|t| format!("{:#x}", t.mark)).collect();
        if marks.is_empty() {
            s.push_str("routing: none needed (no tproxies)\n");
        } else {
            let _ = writeln!(
                s,
                "routing: fwmark {} lookup {} (IPv4 and IPv6): {}",
                marks.join(", "),
                self.route_table,
                if self.routing { "in place" } else { "MISSING" }
            );
        }
        if self.stale > 0 {
            let _ = writeln!(s, "stale elements (cgroup gone): {}", self.stale);
        }
        if !self.totals.is_empty() {
            s.push_str("targets:\n");
            for (target, n) in &self.totals {
                let _ = write!(s, "  {target:<24} {n:>6} cgroups");
                if let Some((packets, bytes)) = self.traffic.get(target) {
                    let _ = write!(s, "  {packets} packets, {bytes} bytes");
                }
                s.push('\n');
            }
        }
        if !self.gateway.is_empty() {
            let present = self.gateway.iter().all(|g| g.present);
            let _ = writeln!(
                s,
                "gateway (forwarded traffic, first match wins): {}",
                if present { "in place" } else { "MISSING from the kernel" }
            );
            if let Some(b) = &self.gateway_bridge {
                let _ = writeln!(s, "  bridges: {b}");
            }
            if let Some(f) = &self.gateway_forward {
                let _ = writeln!(s, "  forward rules: {f}");
            }
            for w in &self.gateway_vpn {
                let _ = writeln!(s, "  WARNING: {w}");
            }
            for g in &self.gateway {
                let _ = write!(s, "  gateway[{}] (line {}): {} -> {}", g.index, g.line, g.conditions, g.target);
                if let (Some(p), Some(b)) = (g.packets, g.bytes) {
                    let _ = write!(s, "  {p} packets, {b} bytes");
                }
                s.push('\n');
            }
        }
        if !self.cgroups.is_empty() {
            let counted = !self.traffic.is_empty();
            let _ = write!(s, "cgroups:\n  {:<24} {:>5}", "TARGET", "RULE");
            if counted {
                let _ = write!(s, " {:>10} {:>12}", "PACKETS", "BYTES");
            }
            s.push_str("  PATH\n");
            for c in &self.cgroups {
                let rule = c.rule.map_or("-".to_owned(), |r| r.to_string());
                let _ = write!(s, "  {:<24} {:>5}", c.target, rule);
                if counted {
                    let _ = write!(s, " {:>10} {:>12}", c.packets.unwrap_or(0), c.bytes.unwrap_or(0));
                }
                let _ = writeln!(s, "  {}", crate::cgname::escape(&c.path));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_status_renders_to_a_fixed_text() {
        let cfg = Config::parse("version: 1\ntproxies:\n  p: {mark: 7, port: 7893}\n", "t.yaml").unwrap();
        let daemon =
            DaemonState { pid: 9, config: "t.yaml".into(), started: 100, startup_ms: 1.5, ..Default::default() };
        let status = Status {
            daemon: Some(daemon),
            other_netns: false,
            kernel_unreadable: None,
            table: true,
            routing: true,
            route_table: 300,
            cgroups: vec![CgroupStatus {
                path: "/a".into(),
                id: 5,
                target: "tproxy p".into(),
                rule: Some(0),
                packets: None,
                bytes: None,
            }],
            totals: BTreeMap::from([("tproxy p".to_owned(), 1)]),
            traffic: BTreeMap::new(),
            stale: 2,
            gateway: Vec::new(),
            gateway_bridge: None,
            gateway_forward: None,
            gateway_vpn: Vec::new(),
            netns_note: None,
            state_unreadable: None,
            now: 160,
        };
        assert_eq!(
            status.text(&cfg),
            "daemon: running, pid 9, config t.yaml, up 60s, 0 reloads, 0 rebuilds, startup 1.5 ms\n\
             table inet cgtproxy: present, 1 classified cgroups\n\
             routing: fwmark 0x7 lookup 300 (IPv4 and IPv6): in place\n\
             stale elements (cgroup gone): 2\n\
             targets:\n  tproxy p                      1 cgroups\n\
             cgroups:\n  TARGET                    RULE  PATH\n  tproxy p                     0  /a\n"
        );
    }
}
