//! Building a [`Ruleset`] from the config and the cgroups that exist:
//! the map elements and every chain with its rules.

use std::collections::{BTreeMap, BTreeSet};

use super::gateway;
use super::model::Ruleset;
use super::stmt::{Chain, Hook, L4, Only, PRIO_DSTNAT, PRIO_MANGLE, Stmt};
use super::verdict::{Element, Verdict, merge};
use crate::cgroup::Cgroup;
use crate::config::{Cidr, Config, Tproxy};
use crate::names::*;

impl Ruleset {
    /// The static part of the ruleset for `cfg`, with no cgroup yet.
    pub fn new(cfg: &Config) -> Self {
        let (v4, v6): (Vec<Cidr>, Vec<Cidr>) = cfg.bypass.iter().partition(|c| c.addr.is_ipv4());
        Ruleset {
            bypass4: merge(v4.iter().map(Cidr::range).collect()),
            bypass6: merge(v6.iter().map(Cidr::range).collect()),
            dynamic_sets: cfg
                .sets
                .iter()
                .filter(|(_, s)| **s == crate::config::sets::NamedSet::Dynamic)
                .map(|(n, _)| n.clone())
                .collect(),
            bypass_sets: cfg.bypass_sets.clone(),
            tproxies: cfg.tproxies.values().cloned().collect(),
            route_table: cfg.route_table,
            levels: if cfg.strict { (1..=cfg.strict_depth).collect() } else { BTreeSet::new() },
            elements: BTreeMap::new(),
            strict: cfg.strict.then_some(cfg.strict_depth),
            counters: cfg.counters,
            gateway: cfg.gateway.clone(),
            broute: true,
            local4: Vec::new(),
            local6: Vec::new(),
            // Counting every packet per cgroup needs the per-packet lookup.
            flow_mask: if cfg.counters { 0 } else { cfg.flow_mark_mask },
            flow_epoch: 0,
            drop_loopback: cfg.drop_loopback,
            verdicts: cfg
                .rules
                .iter()
                .map(|r| (r.target.clone(), Verdict::for_target(&r.target, &cfg.tproxies)))
                .collect(),
            tails: super::tails::Tails::new(cfg, |r| Verdict::for_target(&r.target, &cfg.tproxies)),
        }
    }

    /// The ruleset for `cfg` and the cgroups `cgroups`.
    pub fn build(cfg: &Config, cgroups: &[Cgroup]) -> Self {
        let mut rs = Self::new(cfg);
        if rs.tails.active() {
            // Tails bind partly (a conditional drop): each cgroup asks its
            // nearest classified ancestor, ancestors first.
            let ids: std::collections::HashMap<&str, u64> = cgroups.iter().map(|c| (&*c.path, c.id)).collect();
            let mut order: Vec<&Cgroup> = cgroups.iter().collect();
            order.sort_by_key(|c| c.level);
            for cg in order {
                rs.classify(cfg, cg, |rs| rs.binding_above(&cg.path, |p| ids.get(p).copied()));
            }
            return rs;
        }
        if !rs.verdicts.values().any(|v| binds(*v)) {
            for cg in cgroups {
                rs.classify(cfg, cg, |_| None);
            }
            return rs;
        }
        // Ancestors first, whatever order the caller gives, so each cgroup
        // sees the verdict of the ancestors that bind it. The binding
        // roots (a drop or reject not bound itself), as `PATH/`, form an
        // antichain: the greatest one not after a path is its ancestor if
        // any is (every string between `A/` and `A/...` starts with `A/`).
        let mut roots: BTreeMap<String, (Verdict, Option<u32>)> = BTreeMap::new();
        let root_above = |roots: &BTreeMap<String, (Verdict, Option<u32>)>, path: &str| {
            let (r, v) =
                roots.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(path))).next_back()?;
            path.starts_with(r.as_str()).then_some(*v)
        };
        let mut order: Vec<&Cgroup> = cgroups.iter().collect();
        order.sort_by_key(|c| c.level);
        for cg in order {
            let e = rs.classify(cfg, cg, |_| root_above(&roots, &cg.path));
            if let Some(e) = e.filter(|e| binds(e.verdict))
                && root_above(&roots, &cg.path).is_none()
            {
                roots.insert(format!("{}/", cg.path), (e.verdict, e.rule));
            }
        }
        rs
    }

    /// Add the map element `cg` needs under `cfg`, if any: one for every
    /// matched cgroup, and in strict mode one for every cgroup. `above`:
    /// the binding verdict (drop, reject) of its nearest classified
    /// ancestor, with that ancestor's rule ([`Ruleset::binding_above`]): a
    /// cgroup below a dropped one stays dropped whatever rule its own name
    /// matches, so no name a user gives a child can let it out.
    /// `above` is asked only for a matched cgroup: an unmatched one has no
    /// verdict of its own and inherits in the kernel.
    pub fn classify(
        &mut self,
        cfg: &Config,
        cg: &Cgroup,
        above: impl FnOnce(&Self) -> Option<(Verdict, Option<u32>)>,
    ) -> Option<&Element> {
        if cg.level > MAX_SOCKET_LEVEL {
            // The kernel refuses the level rule: its sockets take the
            // verdict of their ancestor at the deepest level it accepts.
            return None;
        }
        let (verdict, rule) = match cfg.classify(&cg.path) {
            Some(rule) if self.tails.active() => {
                let bound = above(self);
                self.tails.resolve(cfg, &cg.path, rule, bound)
            }
            Some(rule) => match above(self) {
                Some(bound) => bound,
                None => {
                    let verdict = self.verdicts.get(&rule.target).copied();
                    (verdict.unwrap_or(Verdict::Direct), u32::try_from(rule.index).ok())
                }
            },
            None if self.strict.is_some() => (Verdict::Continue, None),
            None => return None,
        };
        self.levels.insert(cg.level);
        let element = Element { level: cg.level, verdict, rule };
        self.elements.insert(cg.id, element);
        self.elements.get(&cg.id)
    }

    /// The verdict that binds the cgroup at `path` from above: that of its
    /// nearest ancestor with an element that decides (not strict mode's
    /// `continue`), when it is drop or reject. `id_of` gives a known
    /// cgroup's id by path.
    pub fn binding_above(&self, path: &str, id_of: impl Fn(&str) -> Option<u64>) -> Option<(Verdict, Option<u32>)> {
        let mut p = path;
        loop {
            p = match p.rfind('/') {
                Some(0) | None => return None,
                Some(i) => &p[..i],
            };
            if let Some(e) = id_of(p).and_then(|id| self.elements.get(&id))
                && e.verdict != Verdict::Continue
            {
                return (binds(e.verdict) || self.tails.binds(e.verdict)).then_some((e.verdict, e.rule));
            }
        }
    }

    /// The chains, in the order they are created and printed.
    pub fn chains(&self) -> Vec<Chain> {
        let cache = self.flow_mask != 0;
        let lo = self.drop_loopback;
        let mut output = vec![Stmt::MarkedReturn];
        // DNS of hijacking cgroups is hijacked whatever its destination:
        // before the bypass sets, so a stub resolver on 127.0.0.53 (in the
        // usual `bypass: 127.0.0.0/8`) is covered too.
        let dns_keep = self.dns_keep();
        if !dns_keep.is_empty() {
            output.push(Stmt::JumpDns);
        }
        if lo {
            // drop-loopback: local DNS (a stub resolver) stays reachable.
            output.push(Stmt::LoopbackDnsReturn);
        } else if cache {
            // The hot path first: a flow cached direct or drop ends here,
            // one rule earlier. Answers on loopback to such a flow get its
            // verdict (direct: return, as below; drop: a flow that was
            // reclassified drop gets no answers either).
            output.push(Stmt::FlowVerdict { not_lo: false });
        }
        if !lo {
            // Answers on this host (the TPROXY server's, a local service's):
            // before the class lookup, which would mark the TPROXY server's
            // answers to a proxied flow with the flow's class.
            output.push(Stmt::LoopbackReplyReturn);
        }
        if cache {
            // A flow cached in this generation is neither bypassed nor
            // classified again: its first packet was, and every change of
            // the config or of a cgroup's verdict starts a new generation.
            if lo {
                output.push(Stmt::FlowVerdict { not_lo: true });
            }
            output.push(Stmt::FlowLookup { not_lo: lo });
            output.extend(self.bypass_rules(true, lo));
        } else {
            output.extend(self.bypass_rules(false, lo));
        }
        output.push(Stmt::ClassifyUnmarked);
        if cache {
            output.push(Stmt::JumpFlowCache);
        }
        output.extend([Stmt::DirectClass, Stmt::DropClass]);
        // Only configs with a `reject` rule get these (other rulesets, and
        // their golden files, stay as they were).
        if self.verdicts.values().any(|v| *v == Verdict::Reject) {
            output.push(Stmt::RejectClass { tcp: true });
            output.push(Stmt::RejectClass { tcp: false });
        }
        if !self.tproxies.is_empty() {
            // A proxied app's answers to flows others started leave as they
            // are; loopback (drop-loopback) is never proxied.
            output.push(Stmt::ReplyUnmark);
            if lo {
                output.push(Stmt::LoopbackUnmark);
            }
        }
        for t in &self.tproxies {
            // What the proxy cannot carry (neither TCP nor UDP).
            output.push(Stmt::OtherProtocols { mark: t.mark, direct: t.other_direct });
            // Leave unmarked what this tproxy does not take, so it goes
            // direct (the Go implementation marked it and blackholed it).
            if t.no_udp {
                let keep_dns = t.dns_hijack.is_some();
                output.push(Stmt::Unmark { mark: t.mark, only: Some(Only::Udp { keep_dns }) });
                // IPv6 DNS stays marked only when it is hijacked too.
                let hijack6 = t.dns_hijack.as_ref().is_some_and(|d| d.ip6.is_some());
                if keep_dns && !t.no_ipv6 && !hijack6 {
                    output.push(Stmt::Unmark { mark: t.mark, only: Some(Only::Udp6) });
                }
            }
            if t.no_ipv6 {
                output.push(Stmt::Unmark { mark: t.mark, only: Some(Only::Ipv6) });
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
        ];
        if cache {
            let mut rules = Vec::new();
            if lo {
                rules.push(Stmt::OifLoopbackReturn);
            }
            rules.push(Stmt::UncachedProtocolReturn);
            rules.push(Stmt::ForgedSourceReturn);
            if !self.tproxies.is_empty() {
                rules.push(Stmt::LocalReplyReturn);
            }
            rules.push(Stmt::FlowStore { keep: !self.flow_mask });
            chains.push(Chain { name: CHAIN_FLOW_CACHE.into(), hook: None, rules });
            chains.push(Chain { name: CHAIN_FLOW_DIRECT.into(), hook: None, rules: vec![Stmt::CachedDirect] });
            chains.push(Chain { name: CHAIN_FLOW_DROP.into(), hook: None, rules: vec![Stmt::CachedDrop] });
        }
        chains.extend(self.tails.chains_from(0));
        chains.extend([Chain {
            name: CHAIN_PREROUTING.into(),
            hook: Some(Hook { kind: "filter", hook: "prerouting", priority: PRIO_MANGLE, priority_name: "mangle" }),
            // Before anything returns: which flows the network started
            // decides whose answers may leave unproxied (Stmt::ReplyUnmark).
            rules: (!self.tproxies.is_empty())
                .then_some(Stmt::TagNetworkFlow)
                .into_iter()
                .chain(self.gateway.is_empty().then_some(Stmt::UnmarkedReturn))
                .chain(self.bypass_rules(false, false))
                .chain((!self.gateway.is_empty()).then_some(Stmt::JumpGateway))
                .chain([Stmt::MarkVmap { map: MAP_MARK }])
                .collect(),
        }]);
        if !self.tproxies.is_empty() {
            chains.push(Chain {
                name: CHAIN_POSTROUTING.into(),
                hook: Some(Hook { kind: "filter", hook: "postrouting", priority: 0, priority_name: "filter" }),
                rules: self.tproxies.iter().map(|t| Stmt::LeakGuard { mark: t.mark }).collect(),
            });
        }
        if !dns_keep.is_empty() {
            // Only DNS hijack needs a nat chain (without one, no new flow
            // pays for a NAT binding).
            chains.push(Chain {
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
            });
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

    /// `ip daddr @bypass return` for both families, then the same for each
    /// dynamic set in `bypass`; `unmarked` (after the flow-cache lookup):
    /// only for packets the cache did not decide; `not_lo` (drop-loopback):
    /// not for loopback.
    fn bypass_rules(&self, unmarked: bool, not_lo: bool) -> Vec<Stmt> {
        let mut sets = vec![(SET_BYPASS4.to_string(), false), (SET_BYPASS6.to_string(), true)];
        for name in &self.bypass_sets {
            let [v4, v6] = dynamic_sets(name);
            sets.extend([(v4, false), (v6, true)]);
        }
        sets.into_iter()
            .map(|(set, v6)| match unmarked {
                true => Stmt::UnmarkedBypassReturn { set, v6, not_lo },
                false => Stmt::BypassReturn { set, v6, not_lo },
            })
            .collect()
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
}

/// Drop and reject hold for everything below the cgroup they are given to.
pub fn binds(v: Verdict) -> bool {
    matches!(v, Verdict::Drop | Verdict::Reject)
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
