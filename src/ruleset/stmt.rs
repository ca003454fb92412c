//! Chains and their rules as typed statements: one place decides which
//! rules exist; `render` prints them and `nft::encode` turns them into
//! netlink expressions.

use std::fmt;
use std::net::IpAddr;

use super::cond::CondMatch;
use super::verdict::Interval;
use crate::config::Iface;

/// The conditions of one `gateway` entry, for one address family when it
/// has sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GwMatch {
    pub iface: Option<Iface>,
    /// `(v6, prefixes as merged ranges)`; None: any source.
    pub source: Option<(bool, Vec<Interval>)>,
}

/// What a matching `gateway` entry rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GwVerdict {
    /// direct: leave the classification, the flow is forwarded as is.
    Return,
    Drop,
    /// A tproxy's chain.
    Goto(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn proto(self) -> u8 {
        match self {
            L4::Tcp => libc::IPPROTO_TCP as u8,
            L4::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        })
    }
}

/// Restriction of an [`Stmt::Unmark`] rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// UDP (but DNS, when `keep_dns`, which the DNS hijack needs marked).
    Udp {
        keep_dns: bool,
    },
    /// UDP over IPv6 (DNS hijack is IPv4 only).
    Udp6,
    Ipv6,
}

/// One rule of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `ct direction reply return`: replies of any connection are never
    /// rerouted (this also lets a TPROXY server answer).
    CtReplyReturn,
    /// `ip daddr @bypass return` / `ip6 daddr @bypass6 return`, or the
    /// same with a dynamic named set in `bypass` (`ip daddr @NAME return`,
    /// `ip6 daddr @NAME6 return`); with `not_lo` (drop-loopback),
    /// `oif != "lo"` first.
    BypassReturn {
        set: String,
        v6: bool,
        not_lo: bool,
    },
    /// `meta mark 0x00000000 [oif != "lo"] ip daddr @bypass return`: with
    /// the flow cache, after its lookup (a cached flow skips the bypass).
    UnmarkedBypassReturn {
        set: String,
        v6: bool,
        not_lo: bool,
    },
    /// `meta l4proto != { tcp, udp } return` (gateway chains)
    NotTcpUdpReturn,
    /// `oif "lo" ct direction reply return`: answers sent on this host
    /// (the TPROXY server's to proxied apps, a local service's) are not
    /// classified.
    LoopbackReplyReturn,
    /// `oif "lo" meta l4proto { tcp, udp } th dport 53 return`
    /// (drop-loopback): the local DNS stub stays reachable.
    LoopbackDnsReturn,
    /// `[oif != "lo"] ct mark vmap @flow-verdict`: a flow cached direct
    /// (`goto flow-direct`) or drop (`goto flow-drop`) in this generation
    /// is done with one lookup and one counter.
    FlowVerdict {
        not_lo: bool,
    },
    /// `counter return` (flow-direct) / `counter drop` (flow-drop): a
    /// cached flow's packets counted for their target.
    CachedDirect,
    CachedDrop,
    /// `meta mark 0x00000000 return` (prerouting without gateway entries):
    /// only our re-routed packets carry a mark that prerouting acts on.
    UnmarkedReturn,
    /// `[oif != "lo"] meta mark set ct mark map @flow-class`: a flow cached
    /// in this generation gets its class without classification.
    FlowLookup {
        not_lo: bool,
    },
    /// `meta mark 0x00000000 jump classify`
    ClassifyUnmarked,
    /// `meta mark 0x00000000 ct direction original jump flow-cache`: no
    /// level decided (direct): cached too, but only in the original
    /// direction, where the packet's socket is the app's (answers may come
    /// from a request or time-wait socket, which no level can classify).
    JumpFlowCache,
    /// `meta mark != 0x00000000 goto flow-cache` (`return` without the
    /// cache): the level that decided ends `classify`.
    Decided {
        cache: bool,
    },
    /// `oif "lo" return` (flow-cache, drop-loopback: loopback is
    /// classified on every packet, both ends being this host's).
    OifLoopbackReturn,
    /// `meta l4proto != { tcp, udp } return` (flow-cache): other protocols'
    /// conntrack entries are shared by every socket between two addresses
    /// (raw, generic) or outlive their socket by design; never cached.
    UncachedProtocolReturn,
    /// `ct mark & KEEP == 0x00000000 ct mark set meta mark map
    /// @flow-token`: the flow's class as this generation's token; a flow
    /// whose conntrack mark has bits of another program is never cached.
    FlowStore {
        keep: u32,
    },
    /// `ct direction reply ct label 127 meta mark set 0x00000000`: answers
    /// to flows the network started ([`Stmt::TagNetworkFlow`]) are never
    /// proxied. A flow this host started has no answers that may leave
    /// unproxied: its "reply" direction out of a non-loopback interface can
    /// only be an app answering a source a local socket forged (IPv6
    /// freebind, a transparent proxy socket delivering a full-cone UDP
    /// datagram), so it is classified as the app's own traffic.
    ReplyUnmark,
    /// `iif != "lo" ct state new ct label set 127` (prerouting): the flow
    /// was started from the network (or another namespace), not here.
    TagNetworkFlow,
    /// `fib saddr type != local return` (flow-cache): a packet this host
    /// sends with a source that is not its own (freebind, transparent) is
    /// never cached: the flow's other end is local too, and its answers
    /// must be classified as their sender's, not take this class.
    ForgedSourceReturn,
    /// `ct direction reply ct label ! 127 return` (flow-cache): an answer is
    /// cached only in a flow the network started; in one this host started
    /// its sender is not the flow's (a forged source's answerer), and its
    /// class would be taken by the flow's own later packets.
    LocalReplyReturn,
    /// `meta mark M oif != "lo" counter drop` (postrouting): a packet with a
    /// tproxy's mark leaves only through loopback, to the proxy. Routing
    /// alone does not hold it there: a socket bound to a device
    /// (SO_BINDTODEVICE, unprivileged) reroutes to that device, and
    /// broadcast and multicast never look at the policy rule.
    LeakGuard {
        mark: u32,
    },
    /// `oif "lo" meta mark set 0x00000000` (drop-loopback)
    LoopbackUnmark,
    /// `meta mark M meta l4proto != { tcp, udp } drop` (or `meta mark set
    /// 0x00000000` with `other-protocols: direct`)
    OtherProtocols {
        mark: u32,
        direct: bool,
    },
    /// `meta mark != 0x00000000 return`: a packet that already has a mark
    /// (SO_MARK of a VPN or of the proxy itself) is left alone; the mark is
    /// ours to use below.
    MarkedReturn,
    /// `jump classify`
    JumpClassify,
    /// `ct direction original meta l4proto { tcp, udp } th dport 53 jump dns-hijack`
    JumpDns,
    /// `meta mark M meta nfproto ipv4 meta l4proto udp accept`: DNS a
    /// `NAME-DNS` chain will rewrite keeps its mark and skips the bypass.
    DnsKeep {
        mark: u32,
        l4: L4,
        v6: bool,
    },
    /// `meta mark set 0x00000000`
    ResetMark,
    /// `meta mark set socket cgroupv2 level N map @cgroup-class`: the
    /// deepest known cgroup decides.
    ClassifyLevel {
        level: u32,
    },
    /// `socket cgroupv2 level N != @cgroup-class drop`: strict mode holds
    /// packets of a cgroup the daemon has not classified.
    UnknownCgroupDrop {
        level: u32,
    },
    /// `meta mark M [udp dport != 53 | meta l4proto udp | meta nfproto ipv6]
    /// meta mark set 0x00000000`
    Unmark {
        mark: u32,
        only: Option<Only>,
    },
    /// `meta mark 0x43475401 counter meta mark set 0x00000000 return`:
    /// direct traffic leaves unmarked, and no later rule looks at it. Every packet of a direct cgroup passes this
    /// rule once, so its counter is the target's traffic (`top`, `status`)
    /// at the cost of one counter update, without `counters: true`.
    DirectClass,
    /// `meta mark 0x43475402 counter drop` (the counter: see DirectClass)
    DropClass,
    /// `meta mark 0x43475403 meta l4proto tcp counter reject with tcp reset`
    /// (`tcp`), else `meta mark 0x43475403 counter reject` (ICMP/ICMPv6 port
    /// unreachable): the app fails at once instead of timing out.
    RejectClass {
        tcp: bool,
    },
    /// `meta mark vmap @MAP`
    MarkVmap {
        map: &'static str,
    },
    /// `ct status dnat return`
    CtDnatReturn,
    /// `[meta nfproto ipv4] meta l4proto { tcp, udp } counter tproxy [ip] to
    /// :PORT`: the counter is the tproxy target's traffic (see DirectClass).
    Tproxy {
        port: u16,
        ipv4_only: bool,
        tcp_only: bool,
    },
    /// `meta nfproto ipv4 udp dport 53 dnat ip to IP:PORT` (or ipv6 / ip6)
    DnsDnat {
        l4: L4,
        ip: IpAddr,
        port: u16,
    },

    // --- gateway (forwarded traffic), see ruleset/gateway.rs ---
    /// `jump gateway`
    JumpGateway,
    /// `iif "lo" return`: this host's own traffic, looped back by the cgroup rules.
    LoopbackReturn,
    /// `meta mark != 0x00000000 meta mark != @mark-vmap return`: a mark
    /// someone else set is not ours to touch.
    ForeignMarkReturn,
    /// `fib daddr type local meta mark set 0x00000000 return`: traffic to
    /// this host itself is never redirected.
    LocalUnmarkReturn,
    /// `ct direction reply meta mark set 0x00000000 return`
    ReplyUnmarkReturn,
    /// `ct state new ct mark 0x00000000 jump gateway-classify`: a flow is
    /// classified once, on its first packet; flows that existed before stay as they are.
    NewFlowClassify,
    /// `meta mark set 0x00000000`
    ClearMark,
    /// `ct mark M udp dport 53 return`: DNS of a hijacking tproxy goes to
    /// `gateway-nat`, not to the TPROXY port.
    FlowDnsReturn {
        mark: u32,
        l4: L4,
        /// Only IPv4 is hijacked (no `ip6`): IPv6 DNS is proxied instead,
        /// as for cgroups, never forwarded as it is.
        v4_only: bool,
    },
    /// `ct mark M meta mark set M`: the flow's class becomes the routing mark.
    FlowMark {
        mark: u32,
    },
    /// `meta mark != 0x00000000 ct mark set meta mark return`: the bridge
    /// chain brouted this packet and chose its entry already.
    BroutedKeep,
    /// `fib daddr . iif oif exists return`: leaves through the interface it
    /// came in on (two hosts on one bridge): not routed by this host.
    SameIfaceReturn,
    /// One entry's conditions and verdict, in `gateway-classify` (inet) or
    /// the bridge table's `prerouting` (`meta ibrname` for the interface).
    GwEntry {
        m: GwMatch,
        bridge: bool,
        counter: bool,
        verdict: GwVerdict,
    },
    /// `meta nfproto ipv6 return` (inet) / `ether type ip6 return` (bridge)
    Ipv6Return {
        bridge: bool,
    },
    /// `udp dport != 53 return` (keep DNS) / `meta l4proto udp return`
    UdpReturn {
        keep_dns: bool,
    },
    /// `udp dport 53 return` / `tcp dport 53 return`
    DnsReturn {
        l4: L4,
    },
    /// `ct mark set M`
    SetFlowMark {
        mark: u32,
    },
    /// `meta mark set M meta broute set 1` (bridge family): the frame goes up
    /// the IP stack on the bridge port before br_netfilter sees it.
    Broute {
        mark: u32,
    },
    /// `meta pkttype != host return` (bridge): not addressed to this host's MAC.
    NotHostReturn,
    /// `ether type != { ip, ip6 } return` (bridge): ARP and every other
    /// non-IP frame is bridged. A brouted ARP reply would reach the port,
    /// which has no address, and the host would never resolve the client.
    NotIpReturn,
    /// `tcp flags & (fin | syn | rst | ack) != syn return` (bridge): only a
    /// connection's first packet needs the broute.
    TcpNotSynReturn,
    /// `ip daddr @bypass return` in the bridge family.
    BridgeBypassReturn {
        v6: bool,
    },
    /// `ct mark M meta nfproto ipv4 udp dport 53 redirect to :PORT`
    DnsRedirect {
        mark: u32,
        l4: L4,
        v6: bool,
        port: u16,
    },
    /// `ip daddr @local-nets return` / `ip6 daddr @local-nets6 return`
    /// (inet or bridge): forwarding between this host's own networks stays
    /// on the forward path, where other firewalls decide it.
    LocalNetReturn {
        v6: bool,
        bridge: bool,
    },

    // --- conditional rules (tails), see ruleset/tails.rs ---
    /// `[ip daddr { ... } | meta nfproto ipv6] [udp dport 443] meta mark
    /// set CLASS return`: one match of a conditional rule in its tail chain.
    TailMatch {
        m: CondMatch,
        class: u32,
    },
    /// `meta mark set CLASS`: the end of a tail chain (its unconditional
    /// rule's class, or 0: the next shallower level decides).
    TailEnd {
        class: u32,
    },
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// Chain type: `filter`, `route` or `nat`.
    pub kind: &'static str,
    /// `output` or `prerouting`.
    pub hook: &'static str,
    pub priority: i32,
    /// The name `nft` shows for `priority`.
    pub priority_name: &'static str,
}

pub const PRIO_MANGLE: i32 = -150;
/// The bridge family's `filter` priority: the brouting slot, before
/// br_netfilter (priority 0) sees the frame.
pub const PRIO_BRIDGE_FILTER: i32 = -200;
pub const PRIO_DSTNAT: i32 = -100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Stmt>,
}
