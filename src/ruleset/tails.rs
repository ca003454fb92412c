//! Conditional rules (`protocol`, `port`, `family`, `destination`) as
//! *tails*: a cgroup whose first matching rule has conditions gets as its
//! class a tail class, the number of its ordered rule tail (the rules
//! matching its path from that one up to and including the first
//! unconditional one). `classify` dispatches a tail class right after the
//! level lookup (`meta mark vmap @tails`, jump `tail-N`), and the chain
//! turns it into a final class: the first rule whose conditions the packet
//! meets, else the unconditional rule's, else 0 (no rule of the tail took
//! the packet: the next shallower level decides, as for a cgroup no rule
//! matches). So the flow cache only ever stores final classes, and
//! cgroups with the same tail share one chain.

use super::cond::{CondMatch, Dest};
use super::stmt::{Chain, Stmt};
use super::verdict::{Verdict, merge};
use crate::config::{Cidr, Conditions, Config, Family, Proto, Rule};
use crate::names::{TAIL_BASE, TAIL_LAST, dynamic_sets, tail_chain};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tails {
    /// Every rule's conditions and verdict, by index; empty when no rule
    /// has conditions (then nothing here exists in the kernel).
    rules: Vec<(Option<Conditions>, Verdict)>,
    /// The tails in use, by number: their rules' indices, in order. A
    /// tail stays until the next full build, so its class never changes
    /// meaning while the kernel holds it.
    pub list: Vec<Vec<u32>>,
}

fn binds(v: Verdict) -> bool {
    matches!(v, Verdict::Drop | Verdict::Reject)
}

impl Tails {
    /// The rules of `cfg` (`verdict` of each), when some have conditions.
    pub fn new(cfg: &Config, verdict: impl Fn(&Rule) -> Verdict) -> Self {
        if cfg.rules.iter().all(|r| r.conditions.is_none()) {
            return Tails::default();
        }
        Tails { rules: cfg.rules.iter().map(|r| (r.conditions.clone(), verdict(r))).collect(), list: Vec::new() }
    }

    /// Does the config have conditions (a `tails` map, its dispatch rules)?
    pub fn active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rule indices of a tail verdict.
    pub fn rules_of(&self, v: Verdict) -> Option<&[u32]> {
        match v {
            Verdict::Tail(class) => self.list.get((class - TAIL_BASE) as usize).map(Vec::as_slice),
            _ => None,
        }
    }

    /// Does a tail verdict drop or reject some packets (so it binds the
    /// cgroups below, as a drop or reject does)?
    pub fn binds(&self, v: Verdict) -> bool {
        self.rules_of(v).is_some_and(|t| t.iter().any(|&i| binds(self.rules[i as usize].1)))
    }

    /// May a tail verdict send packets to a tproxy?
    pub fn proxies(&self, v: Verdict) -> bool {
        self.rules_of(v).is_some_and(|t| t.iter().any(|&i| matches!(self.rules[i as usize].1, Verdict::Tproxy(_))))
    }

    /// The verdict of the cgroup at `path`, whose first matching rule is
    /// `first`: that rule's verdict when it has no conditions (and nothing
    /// binds from above), else a tail. `bound`: what binds it from above
    /// (`Ruleset::binding_above`): a drop or reject as it is; a
    /// tail's drop and reject rules go first in this cgroup's tail, so
    /// what a parent refuses its children cannot get.
    pub fn resolve(
        &mut self,
        cfg: &Config,
        path: &str,
        first: &Rule,
        bound: Option<(Verdict, Option<u32>)>,
    ) -> (Verdict, Option<u32>) {
        let index = u32::try_from(first.index).ok();
        let mut tail: Vec<u32> = Vec::new();
        if let Some((v, rule)) = bound {
            let Some(above) = self.rules_of(v) else { return (v, rule) };
            let last = *above.last().expect("a tail has rules") as usize;
            if self.rules[last].0.is_none() && binds(self.rules[last].1) {
                // Everything its conditional rules do not take is refused:
                // the child gets exactly the parent's tail.
                return (v, rule);
            }
            tail.extend(above.iter().copied().filter(|&i| binds(self.rules[i as usize].1)));
        }
        for r in cfg.rules[first.index..].iter().filter(|r| r.regex.is_match(path)) {
            if !tail.contains(&(r.index as u32)) {
                tail.push(r.index as u32);
            }
            if r.conditions.is_none() {
                break;
            }
        }
        if let [one] = tail.as_slice()
            && self.rules[*one as usize].0.is_none()
        {
            return (self.rules[*one as usize].1, index);
        }
        let n = match self.list.iter().position(|t| *t == tail) {
            Some(n) => n,
            // Out of tail classes (2,816 distinct rule tails): fail closed.
            None if self.list.len() > (TAIL_LAST - TAIL_BASE) as usize => return (Verdict::Drop, index),
            None => {
                self.list.push(tail);
                self.list.len() - 1
            }
        };
        (Verdict::Tail(TAIL_BASE + n as u32), index)
    }

    /// `tail-N` for every tail from `from` on, in order.
    pub fn chains_from(&self, from: usize) -> Vec<Chain> {
        (from..self.list.len())
            .map(|n| Chain { name: tail_chain(n as u32), hook: None, rules: self.rules(n) })
            .collect()
    }

    /// The `tails` map's elements from tail `from` on: (class, chain).
    pub fn elements_from(&self, from: usize) -> Vec<(u32, String)> {
        (from..self.list.len()).map(|n| (TAIL_BASE + n as u32, tail_chain(n as u32))).collect()
    }

    /// The rules of `tail-N`.
    fn rules(&self, n: usize) -> Vec<Stmt> {
        let mut out = Vec::new();
        for &i in &self.list[n] {
            let (cond, verdict) = &self.rules[i as usize];
            match cond {
                Some(c) => {
                    out.extend(matches(c).into_iter().map(|m| Stmt::TailMatch { m, class: verdict.class() }));
                }
                None => {
                    out.push(Stmt::TailEnd { class: verdict.class() });
                    return out;
                }
            }
        }
        // No rule took the packet: the next shallower level decides.
        out.push(Stmt::TailEnd { class: 0 });
        out
    }

    /// What a tail says, rule by rule, as a person reads it:
    /// `udp dport 443 → reject (rule 0); everything else → tproxy mihomo (rule 1)`.
    pub fn describe(&self, cfg: &Config, v: Verdict) -> Option<String> {
        let rules = self.rules_of(v)?;
        Some(describe_rules(
            cfg,
            rules.iter().map(|&i| (self.rules[i as usize].0.as_ref(), self.rules[i as usize].1, i)),
        ))
    }
}

pub(super) fn describe_rules<'a>(
    cfg: &Config,
    rules: impl Iterator<Item = (Option<&'a Conditions>, Verdict, u32)>,
) -> String {
    let mut parts = Vec::new();
    for (cond, verdict, i) in rules {
        let what = verdict.describe(cfg);
        match cond {
            Some(c) => parts.push(format!("{} → {what} (rule {i})", c.describe())),
            None => {
                parts.push(format!("everything else → {what} (rule {i})"));
                return parts.join("; ");
            }
        }
    }
    parts.push("everything else → as if no rule matched (its parent's verdict, else direct)".into());
    parts.join("; ")
}

/// A rule's conditions as kernel matches: one per destination family and
/// kind (CIDRs, each dynamic set), or one without a destination.
pub fn matches(c: &Conditions) -> Vec<CondMatch> {
    let protos: Vec<u8> = c.protocols.iter().map(|p| p.number()).collect();
    // icmp is IPv4's, icmpv6 IPv6's: the protocol says the family.
    let implied = match c.protocols.as_slice() {
        [] => None,
        ps if ps.iter().all(|p| *p == Proto::Icmp) => Some(false),
        ps if ps.iter().all(|p| *p == Proto::Icmpv6) => Some(true),
        _ => None,
    };
    let Some(d) = &c.destination else {
        let family = if implied.is_some() { None } else { c.family.map(|f| f == Family::V6) };
        return vec![CondMatch { dest: None, family, protos, ports: c.ports.clone() }];
    };
    let mut out = Vec::new();
    for v6 in [false, true] {
        if c.family.is_some_and(|f| (f == Family::V6) != v6) || implied.is_some_and(|i| i != v6) {
            continue;
        }
        let one =
            |dest| CondMatch { dest: Some((v6, dest)), family: None, protos: protos.clone(), ports: c.ports.clone() };
        let ranges = merge(d.cidrs.iter().filter(|x| x.addr.is_ipv6() == v6).map(Cidr::range).collect());
        if !ranges.is_empty() {
            out.push(one(Dest::Ranges(ranges)));
        }
        for s in &d.sets {
            let [a, b] = dynamic_sets(s);
            out.push(one(Dest::Set(if v6 { b } else { a })));
        }
    }
    out
}
