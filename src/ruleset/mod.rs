//! The desired kernel state as a plain value.
//!
//! A [`Ruleset`] is computed from the config and the cgroups that exist; it
//! can be printed as `nft -f` text ([`Ruleset::render`]), compared, and
//! encoded into one netlink batch by [`crate::nft`]. Nothing here does I/O.

mod render;
mod stmt;

use std::collections::{BTreeMap, BTreeSet};

use crate::cgroup::Cgroup;
use crate::config::{Cidr, Config, Target, Tproxy};
pub use stmt::{Chain, Hook, L4, PRIO_DSTNAT, PRIO_MANGLE, Stmt};

pub const TABLE: &str = "cgtproxy";
pub const SET_BYPASS4: &str = "bypass";
pub const SET_BYPASS6: &str = "bypass6";
pub const MAP_CGROUP: &str = "cgroup-vmap";
pub const MAP_MARK: &str = "mark-vmap";
pub const MAP_MARK_DNS: &str = "mark-dns-vmap";
pub const CHAIN_OUTPUT: &str = "output-mangle";
pub const CHAIN_PREROUTING: &str = "prerouting";
pub const CHAIN_OUTPUT_NAT: &str = "output-nat";

/// A verdict stored in `cgroup-vmap`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Leave the chain: the traffic is not touched (direct).
    Return,
    Drop,
    /// Go to a tproxy's `NAME-MARK` chain.
    Goto(String),
    /// Strict mode, a cgroup no rule matches: known, so not held, and
    /// decided by the next shallower level.
    Continue,
}

impl Verdict {
    pub fn for_target(target: &Target) -> Self {
        match target {
            Target::Direct => Verdict::Return,
            Target::Drop => Verdict::Drop,
            Target::Tproxy(name) => Verdict::Goto(mark_chain(name)),
        }
    }
}

/// The chain that marks a tproxy's packets (goto target of cgroup-vmap).
pub fn mark_chain(tproxy: &str) -> String {
    format!("{tproxy}-MARK")
}

/// The chain that sends a tproxy's packets to its port (from prerouting).
pub fn tproxy_chain(tproxy: &str) -> String {
    tproxy.to_owned()
}

/// The chain that rewrites a tproxy's DNS packets (from output-nat).
pub fn dns_chain(tproxy: &str) -> String {
    format!("{tproxy}-DNS")
}

/// One element of `cgroup-vmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub path: String,
    pub level: u32,
    pub verdict: Verdict,
    /// Index of the config rule that chose it (None: strict mode's
    /// `continue` for an unmatched cgroup).
    pub rule: Option<usize>,
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
    /// `cgroup-vmap`, by cgroup id.
    pub elements: BTreeMap<u64, Element>,
    /// Zero-leak mode: hold packets of cgroups not classified yet, at
    /// levels 1..=strict_depth.
    pub strict: Option<u32>,
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
            levels: if cfg.strict {
                (1..=cfg.strict_depth).collect()
            } else {
                BTreeSet::new()
            },
            elements: BTreeMap::new(),
            strict: cfg.strict.then_some(cfg.strict_depth),
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
            Some(rule) => (Verdict::for_target(&rule.target), Some(rule.index)),
            None if self.strict.is_some() => (Verdict::Continue, None),
            None => return None,
        };
        self.levels.insert(cg.level);
        let element = Element {
            path: cg.path.clone(),
            level: cg.level,
            verdict,
            rule,
        };
        self.elements.insert(cg.id, element);
        self.elements.get(&cg.id)
    }

    /// The rules for one `socket cgroupv2` level, in chain order.
    pub fn level_rules(&self, level: u32) -> Vec<Stmt> {
        let vmap = Stmt::CgroupVmap { level };
        match self.strict {
            Some(depth) if level <= depth => vec![Stmt::UnknownCgroupDrop { level }, vmap],
            _ => vec![vmap],
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
        let mut output = vec![
            Stmt::CtReplyReturn,
            Stmt::BypassReturn { v6: false },
            Stmt::BypassReturn { v6: true },
            Stmt::NotTcpUdpReturn,
        ];
        output.extend(
            self.levels
                .iter()
                .rev()
                .flat_map(|&level| self.level_rules(level)),
        );
        let mut chains = vec![
            Chain {
                name: CHAIN_OUTPUT.into(),
                hook: Some(Hook {
                    kind: "route",
                    hook: "output",
                    priority: PRIO_MANGLE,
                    priority_name: "mangle",
                }),
                rules: output,
            },
            Chain {
                name: CHAIN_PREROUTING.into(),
                hook: Some(Hook {
                    kind: "filter",
                    hook: "prerouting",
                    priority: PRIO_MANGLE,
                    priority_name: "mangle",
                }),
                rules: vec![
                    Stmt::BypassReturn { v6: false },
                    Stmt::BypassReturn { v6: true },
                    Stmt::MarkVmap { map: MAP_MARK },
                ],
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
        for t in &self.tproxies {
            chains.push(Chain {
                name: mark_chain(&t.name),
                hook: None,
                rules: mark_rules(t),
            });
            chains.push(Chain {
                name: tproxy_chain(&t.name),
                hook: None,
                rules: tproxy_rules(t),
            });
            if let Some(d) = &t.dns_hijack {
                let mut rules = vec![Stmt::DnsDnat {
                    l4: L4::Udp,
                    ip: d.ip,
                    port: d.port,
                }];
                if d.tcp {
                    rules.push(Stmt::DnsDnat {
                        l4: L4::Tcp,
                        ip: d.ip,
                        port: d.port,
                    });
                }
                chains.push(Chain {
                    name: dns_chain(&t.name),
                    hook: None,
                    rules,
                });
            }
        }
        chains
    }

    /// `nft -f` text for this ruleset.
    pub fn render(&self) -> String {
        render::render(self)
    }
}

/// `NAME-MARK`: mark exactly what the TPROXY chain takes, so no-udp and
/// no-ipv6 traffic keeps its normal route (the Go implementation marked it
/// anyway and so blackholed it).
fn mark_rules(t: &Tproxy) -> Vec<Stmt> {
    let mut rules = Vec::new();
    if t.dns_hijack.is_some() && t.no_udp {
        // DNS over UDP still needs the mark that selects the DNS chain.
        rules.push(Stmt::SetMark {
            mark: t.mark,
            ipv4_only: true,
            tcp_only: false,
            udp_dns: true,
        });
    }
    rules.push(Stmt::SetMark {
        mark: t.mark,
        ipv4_only: t.no_ipv6,
        tcp_only: t.no_udp,
        udp_dns: false,
    });
    rules
}

/// `NAME`, entered from prerouting through mark-vmap.
fn tproxy_rules(t: &Tproxy) -> Vec<Stmt> {
    let mut rules = Vec::new();
    if t.dns_hijack.is_some() {
        // Hijacked DNS was rewritten to a local server by output-nat; it must
        // reach that server, not the TPROXY port.
        rules.push(Stmt::CtDnatReturn);
    }
    rules.push(Stmt::Tproxy {
        port: t.port,
        ipv4_only: t.no_ipv6,
        tcp_only: t.no_udp,
    });
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
