//! The desired kernel state as a plain value.
//!
//! A [`Ruleset`] is computed from the config and the cgroups that exist; it
//! can be printed as `nft -f` text ([`Ruleset::render`]), compared, and
//! encoded into one netlink batch by [`crate::nft`]. Nothing here does I/O.
//!
//! Cgroups are classified through a *data* map (`cgroup-class`: cgroup id
//! -> class), not a verdict map with `goto` elements: every element with a
//! chain verdict makes the kernel re-validate the whole map on each commit
//! (O(elements x lookups) per event), while plain data never does. The class
//! is written into the packet mark, then dispatched by a few static rules.

pub mod gateway;
mod render;
pub mod stmt;

use std::collections::{BTreeMap, BTreeSet};

use crate::cgroup::Cgroup;
use crate::config::{Cidr, Config, GatewayEntry, Target, Tproxy};
use crate::names::*;
pub use stmt::{Chain, Hook, L4, PRIO_BRIDGE_FILTER, PRIO_DSTNAT, PRIO_MANGLE, Stmt};

/// What `cgroup-class` says about a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The traffic leaves normally.
    Direct,
    Drop,
    /// Refused: TCP reset, ICMP port unreachable otherwise.
    Reject,
    /// Marked with this tproxy mark and so routed to the TPROXY server.
    Tproxy(u32),
    /// Strict mode, a cgroup no rule matches: known, so not held, and
    /// decided by the next shallower level (class 0 leaves the mark unset).
    Continue,
}

impl Verdict {
    pub fn for_target(target: &Target, tproxies: &BTreeMap<String, Tproxy>) -> Self {
        match target {
            Target::Direct => Verdict::Direct,
            Target::Drop => Verdict::Drop,
            Target::Reject => Verdict::Reject,
            Target::Tproxy(name) => Verdict::Tproxy(tproxies.get(name).map_or(0, |t| t.mark)),
        }
    }

    /// The value stored in `cgroup-class`.
    pub fn class(self) -> u32 {
        match self {
            Verdict::Direct => CLASS_DIRECT,
            Verdict::Drop => CLASS_DROP,
            Verdict::Reject => CLASS_REJECT,
            Verdict::Tproxy(mark) => mark,
            Verdict::Continue => 0,
        }
    }

    /// The target as people read it, in every command and log line.
    pub fn describe(self, cfg: &Config) -> String {
        match self {
            Verdict::Direct => "direct".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Reject => "reject".into(),
            Verdict::Continue => "unmatched (strict)".into(),
            Verdict::Tproxy(mark) => match cfg.tproxies.values().find(|t| t.mark == mark) {
                Some(t) => format!("tproxy {}", t.name),
                None => format!("tproxy mark {mark:#x}"),
            },
        }
    }

    pub fn from_class(class: u32) -> Self {
        match class {
            CLASS_DIRECT => Verdict::Direct,
            CLASS_DROP => Verdict::Drop,
            CLASS_REJECT => Verdict::Reject,
            0 => Verdict::Continue,
            mark => Verdict::Tproxy(mark),
        }
    }
}

/// One element of `cgroup-class`. No path: there is one element per
/// cgroup, and only printing needs it (see [`Ruleset::render`]); without it
/// an element is 20 bytes instead of 40.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub level: u32,
    pub verdict: Verdict,
    /// Index of the config rule that chose it (None: strict mode's
    /// `continue` for an unmatched cgroup). u32, not usize: one more
    /// word per cgroup otherwise.
    pub rule: Option<u32>,
}

/// An inclusive address range of a bypass set (IPv4 in the low 32 bits).
pub type Interval = (u128, u128);

/// Everything cgtproxy puts into the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub bypass4: Vec<Interval>,
    pub bypass6: Vec<Interval>,
    pub tproxies: Vec<Tproxy>,
    pub route_table: u32,
    /// Levels that have a `socket cgroupv2 level N` rule.
    pub levels: BTreeSet<u32>,
    /// `cgroup-class`, by cgroup id.
    pub elements: BTreeMap<u64, Element>,
    /// Zero-leak mode: hold packets of cgroups not classified yet, at
    /// levels 1..=strict_depth.
    pub strict: Option<u32>,
    /// A packet and byte counter on every `cgroup-class` element (and on
    /// every gateway entry's rules).
    pub counters: bool,
    /// `gateway` entries (forwarded traffic), first match wins.
    pub gateway: Vec<GatewayEntry>,
    /// The kernel can broute (`meta broute set 1`); without it the daemon
    /// turns br_netfilter's IP hooks off instead and there is no bridge table.
    pub broute: bool,
    /// The verdict of each rule target.
    verdicts: BTreeMap<Target, Verdict>,
}

impl Ruleset {
    /// The static part of the ruleset for `cfg`, with no cgroup yet.
    pub fn new(cfg: &Config) -> Self {
        let (v4, v6): (Vec<Cidr>, Vec<Cidr>) = cfg.bypass.iter().partition(|c| c.addr.is_ipv4());
        Ruleset {
            bypass4: merge(v4.iter().map(Cidr::range).collect()),
            bypass6: merge(v6.iter().map(Cidr::range).collect()),
            tproxies: cfg.tproxies.values().cloned().collect(),
            route_table: cfg.route_table,
            levels: if cfg.strict { (1..=cfg.strict_depth).collect() } else { BTreeSet::new() },
            elements: BTreeMap::new(),
            strict: cfg.strict.then_some(cfg.strict_depth),
            counters: cfg.counters,
            gateway: cfg.gateway.clone(),
            broute: true,
            verdicts: cfg
                .rules
                .iter()
                .map(|r| (r.target.clone(), Verdict::for_target(&r.target, &cfg.tproxies)))
                .collect(),
        }
    }

    /// The ruleset for `cfg` and the cgroups `cgroups`.
    pub fn build(cfg: &Config, cgroups: &[Cgroup]) -> Self {
        let mut rs = Self::new(cfg);
        for cg in cgroups {
            rs.classify(cfg, cg);
        }
        rs
    }

    /// Add the map element `cg` needs under `cfg`, if any: one for every
    /// matched cgroup, and in strict mode one for every cgroup.
    pub fn classify(&mut self, cfg: &Config, cg: &Cgroup) -> Option<&Element> {
        let (verdict, rule) = match cfg.classify(&cg.path) {
            Some(rule) => {
                let verdict = self.verdicts.get(&rule.target).copied();
                (verdict.unwrap_or(Verdict::Direct), u32::try_from(rule.index).ok())
            }
            None if self.strict.is_some() => (Verdict::Continue, None),
            None => return None,
        };
        self.levels.insert(cg.level);
        let element = Element { level: cg.level, verdict, rule };
        self.elements.insert(cg.id, element);
        self.elements.get(&cg.id)
    }

    /// The rules of `classify` for one `socket cgroupv2` level, in order.
    pub fn level_rules(&self, level: u32) -> Vec<Stmt> {
        let classify = Stmt::ClassifyLevel { level };
        match self.strict {
            Some(depth) if level <= depth => vec![Stmt::UnknownCgroupDrop { level }, classify],
            _ => vec![classify],
        }
    }

    /// Marks of all tproxies, in order.
    pub fn marks(&self) -> impl Iterator<Item = u32> + '_ {
        self.tproxies.iter().map(|t| t.mark)
    }

    /// Does any tproxy hijack DNS?
    pub fn has_dns(&self) -> bool {
        self.tproxies.iter().any(|t| t.dns_hijack.is_some())
    }

    /// The chains, in the order they are created and printed.
    pub fn chains(&self) -> Vec<Chain> {
        let mut output = vec![Stmt::CtReplyReturn];
        // DNS of hijacking cgroups is hijacked whatever its destination:
        // before the bypass sets, so a stub resolver on 127.0.0.53 (in the
        // usual `bypass: 127.0.0.0/8`) is covered too.
        let dns_keep = self.dns_keep();
        if !dns_keep.is_empty() {
            output.push(Stmt::JumpDns);
        }
        output.extend([
            Stmt::BypassReturn { v6: false },
            Stmt::BypassReturn { v6: true },
            Stmt::NotTcpUdpReturn,
            Stmt::MarkedReturn,
            Stmt::JumpClassify,
            Stmt::Unmark { mark: CLASS_DIRECT, only: None },
            Stmt::DropClass,
        ]);
        // Only configs with a `reject` rule get these (other rulesets, and
        // their golden files, stay as they were).
        if self.verdicts.values().any(|v| *v == Verdict::Reject) {
            output.push(Stmt::RejectClass { tcp: true });
            output.push(Stmt::RejectClass { tcp: false });
        }
        for t in &self.tproxies {
            // Leave unmarked what this tproxy does not take, so it goes
            // direct (the Go implementation marked it and blackholed it).
            if t.no_udp {
                let keep_dns = t.dns_hijack.is_some();
                output.push(Stmt::Unmark { mark: t.mark, only: Some(stmt::Only::Udp { keep_dns }) });
                // IPv6 DNS stays marked only when it is hijacked too.
                let hijack6 = t.dns_hijack.as_ref().is_some_and(|d| d.ip6.is_some());
                if keep_dns && !t.no_ipv6 && !hijack6 {
                    output.push(Stmt::Unmark { mark: t.mark, only: Some(stmt::Only::Udp6) });
                }
            }
            if t.no_ipv6 {
                output.push(Stmt::Unmark { mark: t.mark, only: Some(stmt::Only::Ipv6) });
            }
        }
        let classify: Vec<Stmt> = self.levels.iter().rev().flat_map(|&level| self.level_rules(level)).collect();
        let mut chains = vec![
            Chain {
                name: CHAIN_OUTPUT.into(),
                hook: Some(Hook { kind: "route", hook: "output", priority: PRIO_MANGLE, priority_name: "mangle" }),
                rules: output,
            },
            Chain { name: CHAIN_CLASSIFY.into(), hook: None, rules: classify },
            Chain {
                name: CHAIN_PREROUTING.into(),
                hook: Some(Hook { kind: "filter", hook: "prerouting", priority: PRIO_MANGLE, priority_name: "mangle" }),
                rules: [Stmt::BypassReturn { v6: false }, Stmt::BypassReturn { v6: true }]
                    .into_iter()
                    .chain((!self.gateway.is_empty()).then_some(Stmt::JumpGateway))
                    .chain([Stmt::MarkVmap { map: MAP_MARK }])
                    .collect(),
            },
            Chain {
                name: CHAIN_OUTPUT_NAT.into(),
                hook: Some(Hook {
                    kind: "nat",
                    hook: "output",
                    priority: PRIO_DSTNAT,
                    // `dstnat` names -100 only at prerouting; nft prints
                    // the number here.
                    priority_name: "-100",
                }),
                rules: vec![Stmt::MarkVmap { map: MAP_MARK_DNS }],
            },
        ];
        if !dns_keep.is_empty() {
            let mut rules = vec![Stmt::MarkedReturn, Stmt::JumpClassify];
            rules.extend(dns_keep);
            rules.push(Stmt::ResetMark);
            chains.push(Chain { name: CHAIN_DNS.into(), hook: None, rules });
        }
        for t in &self.tproxies {
            chains.push(Chain { name: tproxy_chain(&t.name), hook: None, rules: tproxy_rules(t) });
            if let Some(d) = &t.dns_hijack {
                let mut rules = Vec::new();
                let protos: &[L4] = if d.tcp { &[L4::Udp, L4::Tcp] } else { &[L4::Udp] };
                for &l4 in protos {
                    rules.push(Stmt::DnsDnat { l4, ip: d.ip.into(), port: d.port });
                    if let Some(ip6) = d.ip6 {
                        rules.push(Stmt::DnsDnat { l4, ip: ip6.into(), port: d.port });
                    }
                }
                chains.push(Chain { name: dns_chain(&t.name), hook: None, rules });
            }
        }
        chains.extend(gateway::inet_chains(self));
        chains
    }

    /// The `dns-hijack` chain's accept rules: exactly the (mark, family,
    /// protocol) combinations a `NAME-DNS` chain rewrites, so any other DNS
    /// takes the normal path.
    fn dns_keep(&self) -> Vec<Stmt> {
        let mut keep = Vec::new();
        for t in &self.tproxies {
            let Some(d) = &t.dns_hijack else { continue };
            let protos: &[L4] = if d.tcp { &[L4::Udp, L4::Tcp] } else { &[L4::Udp] };
            for &l4 in protos {
                // no-udp leaves DNS marked (it is hijacked); no-tcp does not exist.
                keep.push(Stmt::DnsKeep { mark: t.mark, l4, v6: false });
                // no-ipv6 unmarks all IPv6, DNS included.
                if d.ip6.is_some() && !t.no_ipv6 {
                    keep.push(Stmt::DnsKeep { mark: t.mark, l4, v6: true });
                }
            }
        }
        keep
    }

    /// The chains of `table bridge cgtproxy` (empty: no such table).
    pub fn bridge_chains(&self) -> Vec<Chain> {
        gateway::bridge_chains(self)
    }

    /// `nft -f` text for this ruleset, cgroup paths relative to the cgroup2
    /// mount; each element's path is its id's in `cgroups`.
    pub fn render(&self, cgroups: &[Cgroup]) -> String {
        render::render(self, cgroups, "")
    }

    /// `nft -f` text that `nft` can load on this host: cgroup paths relative
    /// to /sys/fs/cgroup (`unified/...` on hybrid hosts), for a cgroup2
    /// mount at `root`. None when nft cannot resolve paths below `root`.
    pub fn render_for_nft(&self, root: &std::path::Path, cgroups: &[Cgroup]) -> Option<String> {
        render::nft_cgroup_prefix(root).map(|prefix| render::render(self, cgroups, &prefix))
    }
}

/// `NAME`, entered from prerouting through mark-vmap.
fn tproxy_rules(t: &Tproxy) -> Vec<Stmt> {
    let mut rules = Vec::new();
    if t.dns_hijack.is_some() {
        // Hijacked DNS was rewritten to a local server by output-nat; it must
        // reach that server, not the TPROXY port.
        rules.push(Stmt::CtDnatReturn);
    }
    rules.push(Stmt::Tproxy { port: t.port, ipv4_only: t.no_ipv6, tcp_only: t.no_udp });
    rules
}

/// Sort and merge overlapping or adjacent ranges: the kernel's interval sets
/// reject overlaps, and `nft` shows merged ranges.
fn merge(mut ranges: Vec<Interval>) -> Vec<Interval> {
    ranges.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
