//! Gateway mode: the chains for traffic this host forwards.
//!
//! ```text
//! prerouting (mangle) ── jump gateway ──> loopback, foreign marks, traffic to
//!   this host, replies: return.  A new flow is classified once
//!   (gateway-classify: first matching entry) and its class kept in the
//!   conntrack mark; every packet of a tproxy flow then gets the tproxy's
//!   mark, and prerouting's `meta mark vmap @mark-vmap` sends it to the
//!   tproxy's chain (`tproxy to :PORT`), as for looped-back cgroup traffic.
//! gateway-nat (dstnat): DNS of hijacking tproxies: `redirect to :PORT`
//!   (the address of the interface the query arrived on).
//! table bridge cgtproxy, prerouting at priority filter (-200):
//!   with br_netfilter (bridge-nf-call-iptables=1, every Docker host) the
//!   inet prerouting hooks run while bridging and the socket TPROXY assigns
//!   is orphaned in ip_rcv_core(): the redirect is lost. Frames addressed to
//!   this host's MAC that a tproxy entry takes (a TCP SYN, a UDP datagram)
//!   are brouted instead: `meta broute set 1` passes them up the IP stack
//!   on the bridge port before br_netfilter sees them, with the tproxy mark
//!   set so the inet chains know the entry without its bridge name.
//!   Later TCP segments need no TPROXY (the established socket is found by
//!   its addresses) and take the normal br_netfilter path.
//! ```

use super::model::Ruleset;
use super::stmt::{Chain, GwMatch, GwVerdict, Hook, L4, PRIO_BRIDGE_FILTER, PRIO_DSTNAT, Stmt};
use super::verdict::merge;
use crate::config::{Cidr, GatewayEntry, Target, Tproxy};
use crate::names::*;

impl Ruleset {
    /// Tproxies that some gateway entry uses, in name order.
    pub fn gateway_tproxies(&self) -> Vec<&Tproxy> {
        self.tproxies
            .iter()
            .filter(|t| self.gateway.iter().any(|e| e.target == Target::Tproxy(t.name.clone())))
            .collect()
    }

    /// Are there `local-nets`/`local-nets6` sets (tproxy entries exist)?
    pub fn has_local_sets(&self) -> bool {
        !self.gateway_tproxies().is_empty()
    }

    /// This host's directly connected networks, as (address, prefix
    /// length): the destinations tproxy entries leave to the forward path.
    pub fn set_local_nets(&mut self, prefixes: &[(std::net::IpAddr, u8)]) {
        let cidrs: Vec<Cidr> = prefixes.iter().map(|&(addr, prefix)| Cidr { addr, prefix }).collect();
        let (v4, v6): (Vec<Cidr>, Vec<Cidr>) = cidrs.into_iter().partition(|c| c.addr.is_ipv4());
        self.local4 = merge(v4.iter().map(Cidr::range).collect());
        self.local6 = merge(v6.iter().map(Cidr::range).collect());
    }

    /// Is there a `table bridge cgtproxy`?
    pub fn has_bridge_table(&self) -> bool {
        self.broute && !self.gateway_tproxies().is_empty()
    }

    fn tproxy_named(&self, name: &str) -> Option<&Tproxy> {
        self.tproxies.iter().find(|t| t.name == name)
    }
}

/// The rules of one entry: one per address family of its sources (or one).
fn entry_rules(rs: &Ruleset, e: &GatewayEntry, bridge: bool) -> Vec<Stmt> {
    let verdict = match &e.target {
        Target::Direct => GwVerdict::Return,
        // The bridge chain only broutes; drop happens in the inet chain.
        Target::Drop | Target::Reject if bridge => GwVerdict::Return,
        // `gateway` entries have no `reject` (config::gateway): drop.
        Target::Drop | Target::Reject => GwVerdict::Drop,
        Target::Tproxy(name) if bridge => GwVerdict::Goto(name.clone()),
        Target::Tproxy(name) => GwVerdict::Goto(gw_chain(name)),
    };
    entry_matches(e)
        .into_iter()
        .map(|m| Stmt::GwEntry { m, bridge, counter: rs.counters, verdict: verdict.clone() })
        .collect()
}

/// What one entry matches: its interface and, per address family, its
/// sources (one match without sources).
fn entry_matches(e: &GatewayEntry) -> Vec<GwMatch> {
    let mut sources = Vec::new();
    for (v6, cidrs) in [(false, e.source4()), (true, e.source6())] {
        if !cidrs.is_empty() {
            sources.push(Some((v6, merge(cidrs.iter().map(Cidr::range).collect()))));
        }
    }
    if sources.is_empty() {
        sources.push(None);
    }
    sources.into_iter().map(|source| GwMatch { iface: e.interface.clone(), source }).collect()
}

/// What a tproxy does not take goes direct (as for cgroups): other
/// protocols, IPv6 with no-ipv6, UDP with no-udp (DNS kept when hijacked).
fn exceptions(t: &Tproxy, bridge: bool) -> Vec<Stmt> {
    // Between this host's own networks (container to container across
    // networks, to a VM or the LAN): not diverted, so the forward path's
    // firewalls (DOCKER-ISOLATION, DOCKER-USER, netavark, libvirt,
    // firewalld) still decide it.
    let mut rules = vec![Stmt::LocalNetReturn { v6: false, bridge }, Stmt::LocalNetReturn { v6: true, bridge }];
    rules.push(Stmt::NotTcpUdpReturn);
    if t.no_ipv6 {
        rules.push(Stmt::Ipv6Return { bridge });
    }
    if t.no_udp {
        rules.push(Stmt::UdpReturn { keep_dns: t.dns_hijack.is_some() && !bridge });
    }
    rules
}

/// Protocols whose DNS a tproxy hijacks.
fn dns_l4(t: &Tproxy) -> Vec<L4> {
    match &t.dns_hijack {
        None => Vec::new(),
        Some(d) if d.tcp => vec![L4::Udp, L4::Tcp],
        Some(_) => vec![L4::Udp],
    }
}

pub(super) fn inet_chains(rs: &Ruleset) -> Vec<Chain> {
    if rs.gateway.is_empty() {
        return Vec::new();
    }
    let tproxies = rs.gateway_tproxies();
    let mut gateway = vec![
        Stmt::LoopbackReturn,
        Stmt::ForeignMarkReturn,
        Stmt::LocalUnmarkReturn,
        Stmt::ReplyUnmarkReturn,
        Stmt::NewFlowClassify,
        Stmt::ClearMark,
    ];
    for t in &tproxies {
        let v4_only = t.dns_hijack.as_ref().is_some_and(|d| d.ip6.is_none());
        gateway.extend(dns_l4(t).into_iter().map(|l4| Stmt::FlowDnsReturn { mark: t.mark, l4, v4_only }));
        gateway.push(Stmt::FlowMark { mark: t.mark });
    }
    // rule_entries() counts these fixed rules.
    let mut classify = vec![Stmt::BroutedKeep, Stmt::SameIfaceReturn];
    for e in &rs.gateway {
        classify.extend(entry_rules(rs, e, false));
    }
    let mut chains = vec![
        Chain { name: CHAIN_GATEWAY.into(), hook: None, rules: gateway },
        Chain { name: CHAIN_GATEWAY_CLASSIFY.into(), hook: None, rules: classify },
    ];
    for t in &tproxies {
        let mut rules = exceptions(t, false);
        rules.push(Stmt::SetFlowMark { mark: t.mark });
        chains.push(Chain { name: gw_chain(&t.name), hook: None, rules });
    }
    let mut nat = Vec::new();
    for t in &tproxies {
        let Some(d) = &t.dns_hijack else { continue };
        for l4 in dns_l4(t) {
            nat.push(Stmt::DnsRedirect { mark: t.mark, l4, v6: false, port: d.port });
            if d.ip6.is_some() {
                nat.push(Stmt::DnsRedirect { mark: t.mark, l4, v6: true, port: d.port });
            }
        }
    }
    chains.extend(forward_chains(rs, &tproxies));
    if !nat.is_empty() {
        chains.push(Chain {
            name: CHAIN_GATEWAY_NAT.into(),
            hook: Some(Hook { kind: "nat", hook: "prerouting", priority: PRIO_DSTNAT, priority_name: "dstnat" }),
            rules: nat,
        });
    }
    chains
}

/// The bridge `prerouting` chain's rules before the entries (counted by
/// [`rule_entries`]).
fn bridge_fixed_rules() -> Vec<Stmt> {
    vec![
        Stmt::NotHostReturn,
        Stmt::NotIpReturn,
        Stmt::BridgeBypassReturn { v6: false },
        Stmt::BridgeBypassReturn { v6: true },
        Stmt::TcpNotSynReturn,
    ]
}

pub(super) fn bridge_chains(rs: &Ruleset) -> Vec<Chain> {
    if !rs.has_bridge_table() {
        return Vec::new();
    }
    let mut pre = bridge_fixed_rules();
    for e in &rs.gateway {
        pre.extend(entry_rules(rs, e, true));
    }
    let mut chains = vec![Chain {
        name: CHAIN_PREROUTING.into(),
        hook: Some(Hook { kind: "filter", hook: "prerouting", priority: PRIO_BRIDGE_FILTER, priority_name: "filter" }),
        rules: pre,
    }];
    for t in rs.gateway_tproxies() {
        let mut rules = exceptions(t, true);
        // Hijacked DNS takes the br_netfilter path: `redirect` needs the
        // bridge's address, and a brouted frame arrives on the port, which
        // has none.
        rules.extend(dns_l4(t).into_iter().map(|l4| Stmt::DnsReturn { l4 }));
        rules.push(Stmt::Broute { mark: t.mark });
        chains.push(Chain { name: t.name.clone(), hook: None, rules });
    }
    chains
}

/// The first entry that takes a packet from `from` arriving on `iif`.
pub fn first_match<'a>(
    entries: &'a [GatewayEntry],
    from: std::net::IpAddr,
    iif: Option<&str>,
) -> Option<&'a GatewayEntry> {
    entries.iter().find(|e| e.matches(from, iif))
}

impl Ruleset {
    /// The tproxy a gateway entry sends to, if any.
    pub fn entry_tproxy(&self, e: &GatewayEntry) -> Option<&Tproxy> {
        match &e.target {
            Target::Tproxy(name) => self.tproxy_named(name),
            _ => None,
        }
    }
}

/// For each rule of `gateway-classify` (inet), or of the bridge table's
/// `prerouting` with `bridge`, the gateway entry it belongs to: how
/// `status` puts the kernel's rule counters next to the entries.
pub fn rule_entries(rs: &Ruleset, bridge: bool) -> Vec<Option<usize>> {
    let fixed = if bridge { bridge_fixed_rules().len() } else { 2 };
    let mut out = vec![None; fixed];
    for e in &rs.gateway {
        out.extend(std::iter::repeat_n(Some(e.index), entry_rules(rs, e, bridge).len()));
    }
    out
}

/// The forward hook's guard. Prerouting decides a flow on its first packet
/// (`ct state new`); a packet conntrack calls invalid (a FIN or RST with no
/// flow, ICMP errors of no flow), answers of a `drop` client, and flows a
/// DNAT rule turns towards the outside after that decision are forwarded
/// unless this stateless pass refuses them: a `drop` client's packets leave
/// only where prerouting lets its new flows go (back out the same
/// interface, bypass), a `tproxy` client's only where its tproxy would not
/// have taken them (or as answers to flows the other side started).
fn forward_chains(rs: &Ruleset, tproxies: &[&Tproxy]) -> Vec<Chain> {
    let guarded = |e: &&GatewayEntry| !matches!(e.target, Target::Direct);
    if !rs.gateway.iter().any(|e| guarded(&e)) {
        return Vec::new();
    }
    let mut entries = Vec::new();
    for e in &rs.gateway {
        let verdict = match &e.target {
            Target::Direct => GwVerdict::Return,
            Target::Drop | Target::Reject => GwVerdict::Goto(CHAIN_GATEWAY_FORWARD_DROP.into()),
            Target::Tproxy(name) => GwVerdict::Goto(gw_forward_chain(name)),
        };
        entries.extend(entry_matches(e).into_iter().map(|m| Stmt::GwEntry {
            m,
            bridge: false,
            counter: false,
            verdict: verdict.clone(),
        }));
    }
    // All returns before one drop: the cheap ones first, the fib lookup
    // (back out the same interface, as `gateway-classify` exempts) last.
    let bypass = [
        Stmt::BypassReturn { set: SET_BYPASS4.into(), v6: false, not_lo: false },
        Stmt::BypassReturn { set: SET_BYPASS6.into(), v6: true, not_lo: false },
    ];
    // Marks of other programs (our own never reach the forward path). Not
    // `@mark-vmap`: a chain on this hook may not reach that map's tproxy
    // chains, even by a lookup.
    let mut drop = vec![Stmt::MarkedReturn];
    drop.extend(bypass.clone());
    drop.extend([Stmt::SameIfaceReturn, Stmt::CachedDrop]);
    let mut chains = vec![
        Chain {
            name: CHAIN_GATEWAY_FORWARD.into(),
            hook: Some(Hook { kind: "filter", hook: "forward", priority: 0, priority_name: "filter" }),
            rules: entries,
        },
        Chain { name: CHAIN_GATEWAY_FORWARD_DROP.into(), hook: None, rules: drop },
    ];
    for t in tproxies {
        let mut rules = vec![Stmt::MarkedReturn, Stmt::CtReplyReturn];
        rules.extend(exceptions(t, false).into_iter().map(|s| match s {
            // Hijacked DNS never reaches the forward path: UDP a no-udp
            // tproxy leaves alone goes out, DNS or not.
            Stmt::UdpReturn { .. } => Stmt::UdpReturn { keep_dns: false },
            other => other,
        }));
        rules.extend(bypass.clone());
        rules.extend([Stmt::SameIfaceReturn, Stmt::CachedDrop]);
        chains.push(Chain { name: gw_forward_chain(&t.name), hook: None, rules });
    }
    chains
}
