//! The desired kernel state as a plain value: [`Ruleset`] and the
//! questions about it that need no building (`build.rs` computes it).

use std::collections::{BTreeMap, BTreeSet};

use super::stmt::Stmt;
use super::verdict::{Element, Interval, Verdict};
use crate::config::{GatewayEntry, Target, Tproxy};

/// Everything cgtproxy puts into the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub bypass4: Vec<Interval>,
    pub bypass6: Vec<Interval>,
    /// Dynamic named sets (each an IPv4 set NAME and an IPv6 set NAME6
    /// that other programs fill), and those `bypass` refers to.
    pub dynamic_sets: Vec<String>,
    pub bypass_sets: Vec<String>,
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
    /// Gateway mode: this host's directly connected networks (its
    /// addresses' prefixes), which tproxy entries never divert to; filled
    /// in by the daemon (`links::connected`), empty otherwise.
    pub local4: Vec<Interval>,
    pub local6: Vec<Interval>,
    /// The verdict of each rule target.
    pub(super) verdicts: BTreeMap<Target, Verdict>,
}

impl Ruleset {
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
}
