//! The desired kernel state as a plain value: [`Ruleset`] and the
//! questions about it that need no building (`build.rs` computes it).

use std::collections::{BTreeMap, BTreeSet};

use super::stmt::Stmt;
use super::tails::Tails;
use super::verdict::{Element, Interval, Verdict};
use crate::config::{GatewayEntry, Target, Tproxy};
use crate::names::{CLASS_DIRECT, CLASS_DROP, CLASS_REJECT};

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
    /// The conntrack mark bits that cache each flow's class (0: no cache).
    pub flow_mask: u32,
    /// The flow cache's generation: its tokens change with it, so a flow
    /// cached before a change misses and is classified again.
    pub flow_epoch: u32,
    /// `drop`/`reject` cover traffic to this host (loopback) too.
    pub drop_loopback: bool,
    /// The verdict of each rule target.
    pub(super) verdicts: BTreeMap<Target, Verdict>,
    /// Conditional rules: their tails in use (nothing when no rule has
    /// conditions).
    pub tails: Tails,
}

impl Ruleset {
    /// The rules of `classify` for one `socket cgroupv2` level, in order.
    /// The first level that decides ends the chain: its class is in the
    /// mark (a `Continue` element leaves it 0, so the next level decides).
    pub fn level_rules(&self, level: u32) -> Vec<Stmt> {
        let mut rules = vec![Stmt::ClassifyLevel { level }];
        if self.tails.active() {
            // A tail class becomes the final class before anything reads it.
            rules.push(Stmt::MarkVmap { map: crate::names::MAP_TAILS });
        }
        rules.push(Stmt::Decided { cache: self.flow_mask != 0 });
        if matches!(self.strict, Some(depth) if level <= depth) {
            rules.push(Stmt::UnknownCgroupDrop { level });
        }
        rules
    }

    /// Every class a flow can be cached with, in token order.
    pub fn flow_classes(&self) -> Vec<u32> {
        let mut classes = vec![CLASS_DIRECT, CLASS_DROP, CLASS_REJECT];
        classes.extend(self.marks());
        classes
    }

    /// (class, token) of this generation: the token is the value the
    /// flow's conntrack mark holds within `flow_mask`. Tokens of
    /// consecutive generations differ; they repeat after
    /// (2^bits - 1) / classes generations.
    pub fn flow_tokens(&self) -> Vec<(u32, u32)> {
        if self.flow_mask == 0 {
            return Vec::new();
        }
        let classes = self.flow_classes();
        let n = (1u64 << self.flow_mask.count_ones()) - 1;
        let shift = self.flow_mask.trailing_zeros();
        let base = u64::from(self.flow_epoch) * classes.len() as u64;
        classes.iter().enumerate().map(|(i, &class)| (class, ((((base + i as u64) % n) + 1) as u32) << shift)).collect()
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
