//! `status`, `explain` and `print --diff`: what the kernel holds, read over
//! netlink and put next to the config. Cgroup ids are resolved to paths by
//! scanning the cgroup tree (an id is its directory's inode).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::{self, Cgroup};
use crate::config::Config;
use crate::nft::{Nft, NftError};
use crate::route::{RouteError, Routes};
use crate::ruleset::{Ruleset, Verdict};
use crate::state::{self, DaemonState};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("scanning cgroups below {root}: {source}")]
    Scan {
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("{0}")]
    Target(String),
}

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
fn gateway_status(
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

fn scan(root: &Path) -> Result<Vec<Cgroup>, InspectError> {
    cgroup::scan(root).map_err(|source| InspectError::Scan { root: root.display().to_string(), source })
}

/// The sentence for a kernel read refused for lack of privilege, or the
/// error itself for any other failure.
fn privileged<T>(r: Result<T, NftError>) -> Result<Result<T, String>, InspectError> {
    match r {
        Err(NftError::Netlink(e)) if matches!(e.errno(), Some(libc::EPERM | libc::EACCES)) => {
            Ok(Err(format!("reading the kernel needs CAP_NET_ADMIN: run as root (sudo) to see it ({e})")))
        }
        Err(e) => Err(e.into()),
        Ok(v) => Ok(Ok(v)),
    }
}

/// A note when the running daemon lives in another network namespace.
fn netns_note(daemon: Option<&DaemonState>) -> Option<String> {
    let d = daemon?;
    let here = crate::netns::own()?;
    (d.netns != 0 && d.netns != here).then(|| {
        format!(
            "the daemon (pid {}) runs in another network namespace (net:[{}]) than this command (net:[{here}]): \
             the table and routing below are this namespace's, not the daemon's; \
             run `nsenter --net=/proc/{}/ns/net cgtproxy ...` to see its own",
            d.pid, d.netns, d.pid
        )
    })
}

pub fn status(cfg: &Config) -> Result<Status, InspectError> {
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
        let target = verdict.describe(cfg);
        *totals.entry(target.clone()).or_insert(0) += 1;
        if let Some((packets, bytes)) = counter {
            let t = traffic.entry(target.clone()).or_insert((0, 0));
            t.0 += packets;
            t.1 += bytes;
        }
        let rule = cfg.classify(&cg.path).map(|r| r.index);
        let (packets, bytes) = (counter.map(|c| c.0), counter.map(|c| c.1));
        cgroups.push(CgroupStatus { path: cg.path.to_string(), id, target, rule, packets, bytes });
    }
    cgroups.sort_by(|a, b| a.path.cmp(&b.path));
    let daemon = state::read();
    let other_netns = netns_note(daemon.as_ref()).is_some();
    let readable = kernel_unreadable.is_none();
    let gateway = gateway_status(cfg, &mut nft, table, readable)?;
    let gateway_bridge = if !cfg.gateway.iter().any(|e| matches!(e.target, crate::config::Target::Tproxy(_))) {
        None
    } else {
        match daemon.as_ref().map(|d| d.gateway_bridge.clone()).filter(|m| !m.is_empty()) {
            Some(m) => Some(m),
            None if readable => Some(crate::bridge::probe(&mut nft).line()),
            None => None,
        }
    };
    Ok(Status {
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
    })
}

impl Status {
    pub fn text(&self, cfg: &Config) -> String {
        let mut s = String::new();
        match &self.daemon {
            Some(d) => {
                let up = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|n| n.as_secs().saturating_sub(d.started))
                    .unwrap_or(0);
                let _ = writeln!(
                    s,
                    "daemon: running, pid {}, config {}, up {}s, {} reloads, {} rebuilds, startup {:.1} ms",
                    d.pid, d.config, up, d.reloads, d.resyncs, d.startup_ms
                );
                if let Some(why) = &d.degraded {
                    let _ = writeln!(s, "daemon: DEGRADED: {why} (the last good kernel state stays; retrying)");
                }
                if d.keep_on_exit {
                    s.push_str("daemon: keeps its table and routing when stopped (`cgtproxy cleanup` removes them)\n");
                }
            }
            None => match state::unreadable() {
                Some(why) => {
                    let _ = writeln!(s, "daemon: unknown: cannot read its state file {why}");
                }
                None => s.push_str("daemon: not running (no live state file)\n"),
            },
        }
        if let Some(note) = netns_note(self.daemon.as_ref()) {
            let _ = writeln!(s, "NOTE: {note}");
        }
        if let Some(d) = self.daemon.as_ref().filter(|d| !d.guard.is_empty()) {
            s.push_str("proxy guard:\n");
            for line in &d.guard {
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
                let _ = writeln!(s, "  {}", c.path);
            }
        }
        s
    }
}

/// Resolve `explain`'s argument to a cgroup path relative to the root.
pub fn resolve_target(target: &str, root: &Path) -> Result<String, InspectError> {
    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        let file = format!("/proc/{target}/cgroup");
        let text =
            std::fs::read_to_string(&file).map_err(|e| InspectError::Target(format!("PID {target}: {file}: {e}")))?;
        return text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned)
            .ok_or_else(|| InspectError::Target(format!("PID {target}: no cgroup v2 entry in {file}")));
    }
    let path = Path::new(target);
    if let Some(rel) = cgroup::relative_path(root, path).filter(|_| path.starts_with(root)) {
        return Ok(if rel.is_empty() { "/".into() } else { rel });
    }
    if target.starts_with('/') {
        return Ok(target.trim_end_matches('/').to_owned());
    }
    Err(InspectError::Target(format!("{target:?} is not a PID, nor a cgroup path starting with /")))
}

pub fn explain(cfg: &Config, target: &str) -> Result<String, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let path = resolve_target(target, &root)?;
    let mut s = String::new();
    let dir = root.join(path.trim_start_matches('/'));
    let id = cgroup::id_of(&dir).ok();
    match id {
        Some(id) => {
            let _ = writeln!(s, "cgroup {path} (id {id}, level {})", cgroup::level_of(&path));
        }
        None => {
            let _ = writeln!(s, "cgroup {path} (does not exist now; matching the path anyway)");
        }
    }
    match cfg.classify(&path) {
        Some(rule) => {
            let m = rule.regex.find(&path).expect("classify matched");
            let _ = writeln!(
                s,
                "rule {} (line {} of {}): {:?} matches {:?} at {}..{} -> {}",
                rule.index,
                rule.line,
                cfg.origin,
                rule.pattern,
                m.as_str(),
                m.start(),
                m.end(),
                rule.target
            );
            if rule.index > 0 {
                let _ = writeln!(s, "  (rules 0..{} do not match)", rule.index - 1);
            }
        }
        None => {
            let _ = writeln!(
                s,
                "no rule matches ({} rules tried): the cgroup follows its nearest classified ancestor, else goes direct",
                cfg.rules.len()
            );
        }
    }
    let daemon = state::read();
    if let Some(note) = netns_note(daemon.as_ref()) {
        let _ = writeln!(s, "NOTE: {note}");
    }
    // The proxy-loop guard overrides the rules for a proxy's own cgroup.
    let needle = format!("cgroup {path},");
    let needle_colon = format!("cgroup {path}:");
    for line in daemon.iter().flat_map(|d| &d.guard) {
        if line.contains(&needle) || line.contains(&needle_colon) {
            let _ = writeln!(s, "proxy guard: {line}");
        }
    }
    let mut nft = Nft::open()?;
    match privileged(nft.table_exists())? {
        Ok(true) => {}
        Ok(false) => {
            s.push_str("kernel: table inet cgtproxy is absent: traffic is not classified\n");
            return Ok(s);
        }
        Err(why) => {
            let _ = writeln!(s, "kernel: not shown: {why}");
            return Ok(s);
        }
    }
    // The kernel's answer: the deepest ancestor-or-self with an element.
    let map = nft.cgroup_map()?;
    let mut own = None;
    let mut effective = None;
    let mut p = path.clone();
    loop {
        if let Ok(cid) = cgroup::id_of(&root.join(p.trim_start_matches('/')))
            && let Some(v) = map.get(&cid)
        {
            if p == path {
                own = Some(*v);
            }
            if *v != Verdict::Continue {
                effective = Some((p.clone(), *v));
                break;
            }
        }
        match p.rfind('/') {
            Some(0) | None => break,
            Some(i) => p.truncate(i),
        }
    }
    match own {
        Some(v) => {
            let _ = writeln!(s, "kernel: cgroup-class holds {:#010x} ({}) for it", v.class(), v.describe(cfg));
        }
        None => s.push_str("kernel: cgroup-class holds nothing for it\n"),
    }
    match effective {
        Some((p, v)) if p == path => {
            let _ = writeln!(s, "effective: {}", v.describe(cfg));
        }
        Some((p, v)) => {
            let _ = writeln!(s, "effective: {} (inherited from {p})", v.describe(cfg));
        }
        None => s.push_str("effective: direct (no classified ancestor)\n"),
    }
    Ok(s)
}

/// `print --diff`: the map and the level rules as the kernel holds them
/// against what the config wants now, as `-`/`+` lines of the rendered
/// ruleset. Returns None when they agree.
pub fn diff(cfg: &Config) -> Result<Option<String>, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let cgroups = scan(&root)?;
    let want = Ruleset::build(cfg, &cgroups);
    let mut nft = Nft::open()?;
    let have_text = if nft.table_exists()? {
        let by_id: HashMap<u64, &Cgroup> = cgroups.iter().map(|c| (c.id, c)).collect();
        let mut have = want.clone();
        have.elements.clear();
        let mut named = cgroups.clone();
        for (id, verdict) in nft.cgroup_map()? {
            let level = match by_id.get(&id) {
                Some(c) => c.level,
                None => {
                    named.push(Cgroup { path: format!("#{id} (gone)").into(), id, level: 0 });
                    0
                }
            };
            have.elements.insert(id, crate::ruleset::Element { level, verdict, rule: None });
        }
        have.levels = nft.level_handles()?.into_keys().collect();
        have.render(&named)
    } else {
        String::new()
    };
    let want_text = want.render(&cgroups);
    if have_text == want_text {
        return Ok(None);
    }
    // Compare lines without list commas: the last element has none.
    let key = |l: &str| l.trim_end_matches(',').to_owned();
    let have_lines: std::collections::HashSet<String> = have_text.lines().map(key).collect();
    let want_lines: std::collections::HashSet<String> = want_text.lines().map(key).collect();
    let mut out = String::from("--- kernel\n+++ config\n");
    for l in have_text.lines().filter(|l| !want_lines.contains(&key(l))) {
        let _ = writeln!(out, "-{}", key(l));
    }
    for l in want_text.lines().filter(|l| !have_lines.contains(&key(l))) {
        let _ = writeln!(out, "+{}", key(l));
    }
    Ok((out.lines().count() > 2).then_some(out))
}

/// `explain --from ADDR [--iif IFACE]`: which gateway entry takes a
/// forwarded packet, what happens to it, and what the kernel holds.
pub fn explain_gateway(cfg: &Config, from: std::net::IpAddr, iif: Option<&str>) -> Result<String, InspectError> {
    let mut s = String::new();
    let iface = iif.map_or("any interface".to_owned(), |i| format!("interface {i}"));
    let _ = writeln!(s, "forwarded packet from {from} arriving on {iface}");
    if cfg.gateway.is_empty() {
        s.push_str("no `gateway` entries: forwarded traffic is not touched (forwarded directly)\n");
        return Ok(s);
    }
    let rs = Ruleset::new(cfg);
    match crate::ruleset::gateway::first_match(&cfg.gateway, from, iif) {
        None => {
            let _ = writeln!(
                s,
                "no gateway entry matches ({} tried): forwarded directly{}",
                cfg.gateway.len(),
                if iif.is_none() { " (entries with `interface` need --iif)" } else { "" }
            );
        }
        Some(e) => {
            let _ = writeln!(s, "gateway[{}] (line {} of {}): {e}", e.index, e.line, cfg.origin);
            if e.index > 0 {
                let _ = writeln!(s, "  (gateway[0..{}] do not match)", e.index - 1);
            }
            match rs.entry_tproxy(e) {
                Some(t) => {
                    let mut what = vec![format!(
                        "new TCP and UDP flows go to TPROXY port {} (mark {:#x}, route table {})",
                        t.port, t.mark, cfg.route_table
                    )];
                    if t.no_udp {
                        what.push("UDP goes direct (no-udp)".into());
                    }
                    if t.no_ipv6 {
                        what.push("IPv6 goes direct (no-ipv6)".into());
                    }
                    if let Some(d) = &t.dns_hijack {
                        what.push(format!(
                            "DNS (UDP{}{}) is redirected to port {} of the address it arrived on",
                            if d.tcp { " and TCP" } else { "" },
                            if d.ip6.is_some() { ", IPv4 and IPv6" } else { ", IPv4 only" },
                            d.port
                        ));
                    }
                    what.push("other protocols go direct".into());
                    for w in what {
                        let _ = writeln!(s, "  {w}");
                    }
                }
                None if e.target == crate::config::Target::Drop => {
                    s.push_str("  every new forwarded flow (any protocol) is dropped\n")
                }
                None => s.push_str("  forwarded directly\n"),
            }
            s.push_str(
                "  never affected: traffic to this host's own addresses, bypass destinations, replies, flows \
                 older than the rules, traffic that leaves through the interface it came in on\n",
            );
        }
    }
    let mut nft = Nft::open()?;
    match privileged(nft.table_exists())? {
        Err(why) => {
            let _ = writeln!(s, "kernel: {why}");
            return Ok(s);
        }
        Ok(false) => {
            s.push_str("kernel: table inet cgtproxy is absent: forwarded traffic is not classified\n");
            return Ok(s);
        }
        Ok(true) => {}
    }
    let status = gateway_status(cfg, &mut nft, true, true)?;
    let present = status.iter().all(|g| g.present);
    let _ = writeln!(
        s,
        "kernel: gateway rules {}",
        if present { "in place" } else { "MISSING (the running daemon has another config?)" }
    );
    if let Some(g) = crate::ruleset::gateway::first_match(&cfg.gateway, from, iif).and_then(|e| status.get(e.index))
        && let (Some(p), Some(b)) = (g.packets, g.bytes)
    {
        let _ = writeln!(s, "kernel: gateway[{}] counted {p} packets, {b} bytes", g.index);
    }
    Ok(s)
}
