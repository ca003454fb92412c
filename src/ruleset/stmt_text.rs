//! Statements as `nft list` shows them: the text side of [`Stmt`], which
//! `render` prints and the golden tests compare with the kernel's listing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cond::{CondMatch, Dest, proto_name};
use super::stmt::{GwVerdict, Only, Stmt};
use super::verdict::Interval;
use crate::names::{
    CHAIN_CLASSIFY, CHAIN_DNS, CHAIN_FLOW_CACHE, CHAIN_GATEWAY, CHAIN_GATEWAY_CLASSIFY, CLASS_DIRECT, CLASS_DROP,
    CLASS_REJECT, MAP_CGROUP, MAP_FLOW_CLASS, MAP_FLOW_TOKEN, MAP_FLOW_VERDICT, MAP_MARK, NETWORK_FLOW_LABEL,
    SET_BYPASS4, SET_BYPASS6, SET_LOCAL4, SET_LOCAL6,
};

/// A fresh `counter` as `nft list` shows it (the kernel listing of a table
/// nothing has passed yet equals the rendering).
const COUNTER: &str = "counter packets 0 bytes 0";

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::CtReplyReturn => f.write_str("ct direction reply return"),
            Stmt::BypassReturn { set, v6, not_lo } => {
                if *not_lo {
                    f.write_str("oif != \"lo\" ")?;
                }
                write!(f, "{} daddr @{set} return", if *v6 { "ip6" } else { "ip" })
            }
            Stmt::UnmarkedBypassReturn { set, v6, not_lo } => {
                let inner = Stmt::BypassReturn { set: set.clone(), v6: *v6, not_lo: *not_lo };
                write!(f, "meta mark 0x00000000 {inner}")
            }
            Stmt::NotTcpUdpReturn => f.write_str("meta l4proto != { tcp, udp } return"),
            Stmt::LoopbackReplyReturn => f.write_str("oif \"lo\" ct direction reply return"),
            Stmt::LoopbackDnsReturn => f.write_str("oif \"lo\" meta l4proto { tcp, udp } th dport 53 return"),
            Stmt::FlowVerdict { not_lo } => {
                if *not_lo {
                    f.write_str("oif != \"lo\" ")?;
                }
                write!(f, "ct mark vmap @{MAP_FLOW_VERDICT}")
            }
            Stmt::CachedDirect => write!(f, "{COUNTER} return"),
            Stmt::CachedDrop => write!(f, "{COUNTER} drop"),
            Stmt::UnmarkedReturn => f.write_str("meta mark 0x00000000 return"),
            Stmt::FlowLookup { not_lo } => {
                if *not_lo {
                    f.write_str("oif != \"lo\" ")?;
                }
                write!(f, "meta mark set ct mark map @{MAP_FLOW_CLASS}")
            }
            Stmt::ClassifyUnmarked => write!(f, "meta mark 0x00000000 jump {CHAIN_CLASSIFY}"),
            Stmt::JumpFlowCache => write!(f, "meta mark 0x00000000 ct direction original jump {CHAIN_FLOW_CACHE}"),
            Stmt::Decided { cache: true } => write!(f, "meta mark != 0x00000000 goto {CHAIN_FLOW_CACHE}"),
            Stmt::Decided { cache: false } => f.write_str("meta mark != 0x00000000 return"),
            Stmt::OifLoopbackReturn => f.write_str("oif \"lo\" return"),
            Stmt::UncachedProtocolReturn => f.write_str("meta l4proto != { tcp, udp } return"),
            Stmt::FlowStore { keep } => {
                write!(f, "ct mark & {keep:#010x} == 0x00000000 ct mark set meta mark map @{MAP_FLOW_TOKEN}")
            }
            Stmt::ReplyUnmark => write!(f, "ct direction reply ct label {NETWORK_FLOW_LABEL} meta mark set 0x00000000"),
            Stmt::TagNetworkFlow => write!(f, "iif != \"lo\" ct state new ct label set {NETWORK_FLOW_LABEL}"),
            Stmt::ForgedSourceReturn => f.write_str("fib saddr type != local return"),
            Stmt::LocalReplyReturn => write!(f, "ct direction reply ct label ! {NETWORK_FLOW_LABEL} return"),
            Stmt::LeakGuard { mark } => write!(f, "meta mark {mark:#010x} oif != \"lo\" {COUNTER} drop"),
            Stmt::LoopbackUnmark => f.write_str("oif \"lo\" meta mark set 0x00000000"),
            Stmt::OtherProtocols { mark, direct } => {
                let what = if *direct { "meta mark set 0x00000000" } else { "drop" };
                write!(f, "meta mark {mark:#010x} meta l4proto != {{ tcp, udp }} {what}")
            }
            Stmt::MarkedReturn => f.write_str("meta mark != 0x00000000 return"),
            Stmt::JumpClassify => write!(f, "jump {CHAIN_CLASSIFY}"),
            Stmt::JumpDns => {
                write!(f, "ct direction original meta l4proto {{ tcp, udp }} th dport 53 jump {CHAIN_DNS}")
            }
            Stmt::DnsKeep { mark, l4, v6 } => {
                let family = if *v6 { "ipv6" } else { "ipv4" };
                write!(f, "meta mark {mark:#010x} meta nfproto {family} meta l4proto {l4} accept")
            }
            Stmt::ResetMark => f.write_str("meta mark set 0x00000000"),
            Stmt::ClassifyLevel { level } => {
                write!(f, "meta mark set socket cgroupv2 level {level} map @{MAP_CGROUP}")
            }
            Stmt::UnknownCgroupDrop { level } => write!(f, "socket cgroupv2 level {level} != @{MAP_CGROUP} drop"),
            Stmt::Unmark { mark, only } => {
                write!(f, "meta mark {mark:#010x} ")?;
                match only {
                    None => {}
                    Some(Only::Udp { keep_dns: true }) => f.write_str("udp dport != 53 ")?,
                    Some(Only::Udp { keep_dns: false }) => f.write_str("meta l4proto udp ")?,
                    Some(Only::Udp6) => f.write_str("meta nfproto ipv6 meta l4proto udp ")?,
                    Some(Only::Ipv6) => f.write_str("meta nfproto ipv6 ")?,
                }
                f.write_str("meta mark set 0x00000000")
            }
            Stmt::DirectClass => {
                write!(f, "meta mark {CLASS_DIRECT:#010x} {COUNTER} meta mark set 0x00000000 return")
            }
            Stmt::DropClass => write!(f, "meta mark {CLASS_DROP:#010x} {COUNTER} drop"),
            Stmt::RejectClass { tcp: true } => {
                write!(f, "meta mark {CLASS_REJECT:#010x} meta l4proto tcp {COUNTER} reject with tcp reset")
            }
            Stmt::RejectClass { tcp: false } => write!(f, "meta mark {CLASS_REJECT:#010x} {COUNTER} reject"),
            Stmt::MarkVmap { map } => write!(f, "meta mark vmap @{map}"),
            Stmt::CtDnatReturn => f.write_str("ct status dnat return"),
            Stmt::Tproxy { port, ipv4_only, tcp_only } => {
                if *ipv4_only {
                    f.write_str("meta nfproto ipv4 ")?;
                }
                let protos = if *tcp_only { "tcp" } else { "{ tcp, udp }" };
                let family = if *ipv4_only { "ip " } else { "" };
                write!(f, "meta l4proto {protos} {COUNTER} tproxy {family}to :{port}")
            }
            Stmt::DnsDnat { l4, ip: IpAddr::V4(ip), port } => {
                write!(f, "meta nfproto ipv4 {l4} dport 53 dnat ip to {ip}:{port}")
            }
            Stmt::DnsDnat { l4, ip: IpAddr::V6(ip), port } => {
                write!(f, "meta nfproto ipv6 {l4} dport 53 dnat ip6 to [{ip}]:{port}")
            }
            Stmt::JumpGateway => write!(f, "jump {}", CHAIN_GATEWAY),
            Stmt::LoopbackReturn => f.write_str("iif \"lo\" return"),
            Stmt::ForeignMarkReturn => write!(f, "meta mark != 0x00000000 meta mark != @{MAP_MARK} return"),
            Stmt::LocalUnmarkReturn => f.write_str("fib daddr type local meta mark set 0x00000000 return"),
            Stmt::ReplyUnmarkReturn => f.write_str("ct direction reply meta mark set 0x00000000 return"),
            Stmt::NewFlowClassify => {
                write!(f, "ct state new ct mark 0x00000000 jump {}", CHAIN_GATEWAY_CLASSIFY)
            }
            Stmt::ClearMark => f.write_str("meta mark set 0x00000000"),
            Stmt::FlowDnsReturn { mark, l4, v4_only } => {
                let family = if *v4_only { "meta nfproto ipv4 " } else { "" };
                write!(f, "ct mark {mark:#010x} {family}{l4} dport 53 return")
            }
            Stmt::FlowMark { mark } => write!(f, "ct mark {mark:#010x} meta mark set {mark:#010x}"),
            Stmt::BroutedKeep => f.write_str("meta mark != 0x00000000 ct mark set meta mark return"),
            Stmt::SameIfaceReturn => f.write_str("fib daddr . iif oif exists return"),
            Stmt::GwEntry { m, bridge, counter, verdict } => {
                if let Some(i) = &m.iface {
                    write!(f, "{} {i} ", if *bridge { "meta ibrname" } else { "iifname" })?;
                }
                if let Some((v6, ranges)) = &m.source {
                    let list = intervals(ranges, *v6).join(", ");
                    write!(f, "{} saddr {{ {list} }} ", if *v6 { "ip6" } else { "ip" })?;
                }
                if *counter {
                    write!(f, "{COUNTER} ")?;
                }
                match verdict {
                    GwVerdict::Return => f.write_str("return"),
                    GwVerdict::Drop => f.write_str("drop"),
                    GwVerdict::Goto(c) => write!(f, "goto {c}"),
                }
            }
            Stmt::Ipv6Return { bridge: false } => f.write_str("meta nfproto ipv6 return"),
            Stmt::Ipv6Return { bridge: true } => f.write_str("ether type ip6 return"),
            Stmt::UdpReturn { keep_dns: true } => f.write_str("udp dport != 53 return"),
            Stmt::UdpReturn { keep_dns: false } => f.write_str("meta l4proto udp return"),
            Stmt::DnsReturn { l4 } => write!(f, "{l4} dport 53 return"),
            Stmt::SetFlowMark { mark } => write!(f, "ct mark set {mark:#010x}"),
            Stmt::Broute { mark } => write!(f, "meta mark set {mark:#010x} meta broute set 1"),
            Stmt::NotHostReturn => f.write_str("meta pkttype != host return"),
            Stmt::NotIpReturn => f.write_str("ether type != { ip, ip6 } return"),
            Stmt::TcpNotSynReturn => f.write_str("tcp flags & (fin | syn | rst | ack) != syn return"),
            Stmt::BridgeBypassReturn { v6: false } => write!(f, "ip daddr @{SET_BYPASS4} return"),
            Stmt::BridgeBypassReturn { v6: true } => write!(f, "ip6 daddr @{SET_BYPASS6} return"),
            Stmt::DnsRedirect { mark, l4, v6, port } => {
                let nfproto = if *v6 { "ipv6" } else { "ipv4" };
                write!(f, "ct mark {mark:#010x} meta nfproto {nfproto} {l4} dport 53 redirect to :{port}")
            }
            Stmt::LocalNetReturn { v6: false, .. } => write!(f, "ip daddr @{SET_LOCAL4} return"),
            Stmt::LocalNetReturn { v6: true, .. } => write!(f, "ip6 daddr @{SET_LOCAL6} return"),
            Stmt::TailMatch { m, class } => {
                fmt_cond(f, m)?;
                write!(f, "meta mark set {class:#010x} return")
            }
            Stmt::TailEnd { class } => write!(f, "meta mark set {class:#010x}"),
        }
    }
}

/// A condition as `nft list` shows it, with a trailing space.
fn fmt_cond(f: &mut fmt::Formatter<'_>, m: &CondMatch) -> fmt::Result {
    match &m.dest {
        Some((v6, Dest::Ranges(r))) => {
            write!(f, "{} daddr {{ {} }} ", if *v6 { "ip6" } else { "ip" }, intervals(r, *v6).join(", "))?;
        }
        Some((v6, Dest::Set(name))) => write!(f, "{} daddr @{name} ", if *v6 { "ip6" } else { "ip" })?,
        None => {}
    }
    if let Some(v6) = m.family {
        write!(f, "meta nfproto {} ", if v6 { "ipv6" } else { "ipv4" })?;
    }
    let names: Vec<&str> = m.protos.iter().map(|p| proto_name(*p)).collect();
    if m.ports.is_empty() {
        match names.as_slice() {
            [] => {}
            [one] => write!(f, "meta l4proto {one} ")?,
            many => write!(f, "meta l4proto {{ {} }} ", many.join(", "))?,
        }
        return Ok(());
    }
    match names.as_slice() {
        [one] => write!(f, "{one} dport ")?,
        many => write!(f, "meta l4proto {{ {} }} th dport ", many.join(", "))?,
    }
    let ports: Vec<String> =
        m.ports.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    match ports.as_slice() {
        [one] if m.ports[0].0 == m.ports[0].1 => write!(f, "{one} "),
        many => write!(f, "{{ {} }} ", many.join(", ")),
    }
}

pub fn mark(m: u32) -> String {
    format!("{m:#010x}")
}

pub(super) fn intervals(list: &[Interval], v6: bool) -> Vec<String> {
    list.iter()
        .map(|&(start, end)| {
            let addr = |x: u128| {
                if v6 { Ipv6Addr::from(x).to_string() } else { Ipv4Addr::from(x as u32).to_string() }
            };
            let bits = if v6 { 128 } else { 32 };
            let size = end - start;
            let aligned = size.checked_add(1).is_none_or(|n| n.is_power_of_two() && start % n == 0);
            if start == end {
                addr(start)
            } else if aligned {
                let host_bits = if size == u128::MAX { 128 } else { (size + 1).trailing_zeros() };
                format!("{}/{}", addr(start), bits - host_bits)
            } else {
                format!("{}-{}", addr(start), addr(end))
            }
        })
        .collect()
}
