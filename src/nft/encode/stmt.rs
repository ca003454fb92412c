//! Statements as expressions: what each [`Stmt`] of the ruleset is in
//! nf_tables registers and expressions, as `nft` would encode it.

use crate::names::{
    CHAIN_CLASSIFY, CHAIN_DNS, CHAIN_FLOW_CACHE, CLASS_DIRECT, CLASS_DROP, CLASS_REJECT, MAP_CGROUP, MAP_FLOW_CLASS,
    MAP_FLOW_TOKEN, MAP_FLOW_VERDICT, MAP_MARK, SET_BYPASS4, SET_BYPASS6, SET_LOCAL4, SET_LOCAL6,
};
use crate::nft::batch::Batch;
use crate::nft::expr::{Data, Expr, meta_eq, verdict};
use crate::nft::sys::*;
use crate::ruleset::Stmt;
use crate::ruleset::stmt::{GwVerdict, Only};

use super::matches::{
    ct_bits_set, ct_dir_eq, ct_mark_eq, dport_53, ether_type_eq, gw_match, iif_lo, ip_ether_types_lookup, lookup,
    network_label, oif_lo, reply_in_network_flow, set_mark, tcp_udp_lookup,
};
use super::set::SetIds;

/// The expressions of one statement. Statements that use an anonymous set
/// add it to the batch first.
pub fn exprs(b: &mut Batch, s: &Stmt, ids: &SetIds) -> Vec<Expr> {
    let mut e = Vec::new();
    let ipv4 = [NFPROTO_IPV4];
    match s {
        Stmt::CtReplyReturn => {
            e.push(Expr::Ct { key: NFT_CT_DIRECTION, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![IP_CT_DIR_REPLY] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::BypassReturn { set, v6, not_lo } => {
            // [oif != "lo"] ip daddr @bypass return / ip6 daddr @NAME6 return
            if *not_lo {
                e.extend(oif_lo(false));
            }
            let (proto, offset, len) = if *v6 { (NFPROTO_IPV6, 24, 16) } else { (NFPROTO_IPV4, 16, 4) };
            e.extend(meta_eq(NFT_META_NFPROTO, &[proto]));
            e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
            e.push(lookup(set, ids, None));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::NotTcpUdpReturn | Stmt::UncachedProtocolReturn => {
            let l = tcp_udp_lookup(b, true);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::UnmarkedBypassReturn { set, v6, not_lo } => {
            // meta mark 0x00000000 [oif != "lo"] ip daddr @SET return
            e.extend(meta_eq(NFT_META_MARK, &[0; 4]));
            e.extend(exprs(b, &Stmt::BypassReturn { set: set.clone(), v6: *v6, not_lo: *not_lo }, ids));
        }
        Stmt::LoopbackReplyReturn => {
            // [ meta load oif => reg 1 ] [ cmp eq reg 1 0x00000001 ]
            // [ ct load direction => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 return ]
            e.extend(oif_lo(true));
            e.extend(ct_dir_eq(IP_CT_DIR_REPLY));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::LoopbackDnsReturn => {
            e.extend(oif_lo(true));
            let l = tcp_udp_lookup(b, false);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::FlowVerdict { not_lo } => {
            // [ ct load mark => reg 1 ] [ lookup reg 1 set flow-verdict dreg 0 ]
            if *not_lo {
                e.extend(oif_lo(false));
            }
            e.push(Expr::Ct { key: NFT_CT_MARK, dreg: NFT_REG_1 });
            e.push(lookup(MAP_FLOW_VERDICT, ids, Some(NFT_REG_VERDICT)));
        }
        Stmt::CachedDirect => {
            // [ counter pkts 0 bytes 0 ] [ immediate reg 0 return ]
            e.push(Expr::Counter);
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::CachedDrop => {
            // [ counter pkts 0 bytes 0 ] [ immediate reg 0 drop ]
            e.push(Expr::Counter);
            e.push(verdict(NF_DROP, None));
        }
        Stmt::UnmarkedReturn => {
            e.extend(meta_eq(NFT_META_MARK, &[0; 4]));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::FlowLookup { not_lo } => {
            // [ ct load mark => reg 1 ] [ lookup reg 1 set flow-class dreg 1 ] [ meta set mark with reg 1 ]
            if *not_lo {
                e.extend(oif_lo(false));
            }
            e.push(Expr::Ct { key: NFT_CT_MARK, dreg: NFT_REG_1 });
            e.push(lookup(MAP_FLOW_CLASS, ids, Some(NFT_REG_1)));
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::ClassifyUnmarked => {
            e.extend(meta_eq(NFT_META_MARK, &[0; 4]));
            e.push(verdict(NFT_JUMP, Some(CHAIN_CLASSIFY)));
        }
        Stmt::JumpFlowCache => {
            e.extend(meta_eq(NFT_META_MARK, &[0; 4]));
            e.extend(ct_dir_eq(IP_CT_DIR_ORIGINAL));
            e.push(verdict(NFT_JUMP, Some(CHAIN_FLOW_CACHE)));
        }
        Stmt::Decided { cache } => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(if *cache { verdict(NFT_GOTO, Some(CHAIN_FLOW_CACHE)) } else { verdict(NFT_RETURN, None) });
        }
        Stmt::OifLoopbackReturn => {
            e.extend(oif_lo(true));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::FlowStore { keep } => {
            // [ ct load mark => reg 1 ] [ bitwise reg 1 = ( reg 1 & KEEP ) ^ 0x00000000 ]
            // [ cmp eq reg 1 0x00000000 ] [ meta load mark => reg 1 ]
            // [ lookup reg 1 set flow-token dreg 1 ] [ ct set mark with reg 1 ]
            e.push(Expr::Ct { key: NFT_CT_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Bitwise {
                sreg: NFT_REG_1,
                dreg: NFT_REG_1,
                mask: keep.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(lookup(MAP_FLOW_TOKEN, ids, Some(NFT_REG_1)));
            e.push(Expr::CtSet { key: NFT_CT_MARK, sreg: NFT_REG_1 });
        }
        Stmt::ReplyUnmark => {
            // [ ct load direction => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ ct load label => reg 1 ]
            // [ bitwise reg 1 = ( reg 1 & LABEL ) ^ 0 ] [ cmp neq reg 1 0 ] [ immediate reg 1 0 ] [ meta set mark ]
            e.extend(reply_in_network_flow(true));
            e.extend(set_mark(0));
        }
        Stmt::TagNetworkFlow => {
            // [ meta load iif => reg 1 ] [ cmp neq reg 1 0x00000001 ]
            // [ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0 ] [ cmp neq reg 1 0 ]
            // [ immediate reg 1 LABEL ] [ ct set label with reg 1 ]
            e.extend(iif_lo(false));
            e.extend(ct_bits_set(NFT_CT_STATE, NF_CT_STATE_NEW));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(network_label()) });
            e.push(Expr::CtSet { key: NFT_CT_LABELS, sreg: NFT_REG_1 });
        }
        Stmt::LocalReplyReturn => {
            // [ ct load direction => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ ct load label => reg 1 ]
            // [ bitwise reg 1 = ( reg 1 & LABEL ) ^ 0 ] [ cmp eq reg 1 0 ] [ immediate reg 0 return ]
            e.extend(reply_in_network_flow(false));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::ForgedSourceReturn => {
            // [ fib saddr type => reg 1 ] [ cmp neq reg 1 0x00000002 ] [ immediate reg 0 return ]
            e.push(Expr::Fib { flags: NFTA_FIB_F_SADDR, result: NFT_FIB_RESULT_ADDRTYPE, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::LeakGuard { mark } => {
            // [ meta load mark => reg 1 ] [ cmp eq reg 1 MARK ] [ meta load oif => reg 1 ]
            // [ cmp neq reg 1 0x00000001 ] [ counter ] [ immediate reg 0 drop ]
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            e.extend(oif_lo(false));
            e.push(Expr::Counter);
            e.push(verdict(NF_DROP, None));
        }
        Stmt::LoopbackUnmark => {
            e.extend(oif_lo(true));
            e.extend(set_mark(0));
        }
        Stmt::OtherProtocols { mark, direct } => {
            // [ meta load mark => reg 1 ] [ cmp eq reg 1 MARK ] [ meta load l4proto => reg 1 ]
            // [ lookup reg 1 set __set%d 0x1 ] then drop, or the mark set to 0
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            let l = tcp_udp_lookup(b, true);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            if *direct {
                e.extend(set_mark(0));
            } else {
                e.push(verdict(NF_DROP, None));
            }
        }
        Stmt::MarkedReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::JumpClassify => {
            e.push(verdict(NFT_JUMP, Some(CHAIN_CLASSIFY)));
        }
        Stmt::JumpDns => {
            // [ ct load direction => reg 1 ] [ cmp eq reg 1 0x00000000 ]
            // [ meta load l4proto => reg 1 ] [ lookup reg 1 set __set%d ]
            // [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00003500 ]
            // [ immediate reg 0 jump -> dns-hijack ]
            e.extend(ct_dir_eq(IP_CT_DIR_ORIGINAL));
            let l = tcp_udp_lookup(b, false);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
            e.push(verdict(NFT_JUMP, Some(CHAIN_DNS)));
        }
        Stmt::DnsKeep { mark, l4, v6 } => {
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            e.extend(meta_eq(NFT_META_L4PROTO, &[l4.proto()]));
            e.push(verdict(NF_ACCEPT, None));
        }
        Stmt::ResetMark => {
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![0; 4]) });
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::ClassifyLevel { level } => {
            // [ socket load cgroupv2 => reg 1 , level N ]
            // [ lookup reg 1 set cgroup-class dreg 1 ] [ meta set mark with reg 1 ]
            e.push(Expr::SocketCgroup { level: *level, dreg: NFT_REG_1 });
            e.push(lookup(MAP_CGROUP, ids, Some(NFT_REG_1)));
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::UnknownCgroupDrop { level } => {
            // [ socket load cgroupv2 => reg 1 , level N ] [ lookup reg 1 set cgroup-class 0x1 ]
            e.push(Expr::SocketCgroup { level: *level, dreg: NFT_REG_1 });
            e.push(Expr::Lookup {
                set: MAP_CGROUP.into(),
                set_id: ids.of(MAP_CGROUP),
                sreg: NFT_REG_1,
                dreg: None,
                invert: true,
            });
            e.push(verdict(NF_DROP, None));
        }
        Stmt::Unmark { mark, only } => {
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            match only {
                None => {}
                Some(Only::Udp { keep_dns: true }) => {
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                    e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
                }
                Some(Only::Udp { keep_dns: false }) => {
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                }
                Some(Only::Udp6) => {
                    e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6]));
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                }
                Some(Only::Ipv6) => e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6])),
            }
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![0; 4]) });
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::DirectClass => {
            // [ meta load mark => reg 1 ] [ cmp eq reg 1 0x43475401 ] [ counter pkts 0 bytes 0 ]
            // [ immediate reg 1 0x00000000 ] [ meta set mark with reg 1 ] [ immediate reg 0 return ]
            e.extend(meta_eq(NFT_META_MARK, &CLASS_DIRECT.to_ne_bytes()));
            e.push(Expr::Counter);
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![0; 4]) });
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::DropClass => {
            // `meta mark 0x43475402 counter drop`
            e.extend(meta_eq(NFT_META_MARK, &CLASS_DROP.to_ne_bytes()));
            e.push(Expr::Counter);
            e.push(verdict(NF_DROP, None));
        }
        Stmt::RejectClass { tcp } => {
            e.extend(meta_eq(NFT_META_MARK, &CLASS_REJECT.to_ne_bytes()));
            if *tcp {
                // `meta l4proto tcp reject with tcp reset`: [ reject type 1 code 0 ]
                e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
                e.push(Expr::Counter);
                e.push(Expr::Reject { ty: NFT_REJECT_TCP_RST, code: 0 });
            } else {
                // `reject` in an inet table: [ reject type 2 code 1 ]
                // (icmpx port-unreachable: ICMP or ICMPv6 as the packet is).
                e.push(Expr::Counter);
                e.push(Expr::Reject { ty: NFT_REJECT_ICMPX_UNREACH, code: NFT_REJECT_ICMPX_PORT_UNREACH });
            }
        }
        Stmt::MarkVmap { map } => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(lookup(map, ids, Some(NFT_REG_VERDICT)));
        }
        Stmt::CtDnatReturn => {
            e.extend(ct_bits_set(NFT_CT_STATUS, IPS_DST_NAT));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::Tproxy { port, ipv4_only, tcp_only } => {
            if *ipv4_only {
                e.extend(meta_eq(NFT_META_NFPROTO, &ipv4));
            }
            if *tcp_only {
                e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
            } else {
                let l = tcp_udp_lookup(b, false);
                e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
                e.push(l);
            }
            // `counter` before `tproxy`, whose verdict ends the rule.
            e.push(Expr::Counter);
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(port.to_be_bytes().to_vec()) });
            let family = if *ipv4_only { NFPROTO_IPV4 } else { NFPROTO_UNSPEC };
            e.push(Expr::Tproxy { family, reg_port: NFT_REG_1 });
        }
        Stmt::DnsDnat { l4, ip, port } => {
            let (nfproto, addr) = match ip {
                std::net::IpAddr::V4(a) => (NFPROTO_IPV4, a.octets().to_vec()),
                std::net::IpAddr::V6(a) => (NFPROTO_IPV6, a.octets().to_vec()),
            };
            e.extend(meta_eq(NFT_META_NFPROTO, &[nfproto]));
            e.extend(dport_53(l4.proto()));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(addr) });
            e.push(Expr::Immediate { dreg: NFT_REG_2, data: Data::Value(port.to_be_bytes().to_vec()) });
            e.push(Expr::Dnat { family: nfproto, reg_addr: NFT_REG_1, reg_proto: NFT_REG_2 });
        }
        Stmt::JumpGateway => e.push(verdict(NFT_JUMP, Some(crate::names::CHAIN_GATEWAY))),
        Stmt::LoopbackReturn => {
            // lo is ifindex 1 in every network namespace.
            e.extend(iif_lo(true));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::ForeignMarkReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(Expr::Lookup {
                set: MAP_MARK.into(),
                set_id: ids.of(MAP_MARK),
                sreg: NFT_REG_1,
                dreg: None,
                invert: true,
            });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::LocalUnmarkReturn => {
            e.push(Expr::Fib { flags: NFTA_FIB_F_DADDR, result: NFT_FIB_RESULT_ADDRTYPE, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            e.extend(set_mark(0));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::ReplyUnmarkReturn => {
            e.push(Expr::Ct { key: NFT_CT_DIRECTION, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![IP_CT_DIR_REPLY] });
            e.extend(set_mark(0));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::NewFlowClassify => {
            e.extend(ct_bits_set(NFT_CT_STATE, NF_CT_STATE_NEW));
            e.extend(ct_mark_eq(0));
            e.push(verdict(NFT_JUMP, Some(crate::names::CHAIN_GATEWAY_CLASSIFY)));
        }
        Stmt::ClearMark => e.extend(set_mark(0)),
        Stmt::FlowDnsReturn { mark, l4, v4_only } => {
            e.extend(ct_mark_eq(*mark));
            if *v4_only {
                e.extend(meta_eq(NFT_META_NFPROTO, &ipv4));
            }
            e.extend(dport_53(l4.proto()));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::FlowMark { mark } => {
            e.extend(ct_mark_eq(*mark));
            e.extend(set_mark(*mark));
        }
        Stmt::BroutedKeep => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::CtSet { key: NFT_CT_MARK, sreg: NFT_REG_1 });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::SameIfaceReturn => {
            let flags = NFTA_FIB_F_DADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT;
            e.push(Expr::Fib { flags, result: NFT_FIB_RESULT_OIF, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 1u32.to_ne_bytes().to_vec() });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::GwEntry { m, bridge, counter, verdict: v } => {
            e.extend(gw_match(b, m, *bridge));
            if *counter {
                e.push(Expr::Counter);
            }
            e.push(match v {
                GwVerdict::Return => verdict(NFT_RETURN, None),
                GwVerdict::Drop => verdict(NF_DROP, None),
                GwVerdict::Goto(c) => verdict(NFT_GOTO, Some(c)),
            });
        }
        Stmt::Ipv6Return { bridge } => {
            if *bridge {
                e.extend(ether_type_eq(ETH_P_IPV6));
            } else {
                e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6]));
            }
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::UdpReturn { keep_dns } => {
            e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
            if *keep_dns {
                e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
            }
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::DnsReturn { l4 } => {
            e.extend(dport_53(l4.proto()));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::SetFlowMark { mark } => {
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(mark.to_ne_bytes().to_vec()) });
            e.push(Expr::CtSet { key: NFT_CT_MARK, sreg: NFT_REG_1 });
        }
        Stmt::Broute { mark } => {
            e.extend(set_mark(*mark));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![1]) });
            e.push(Expr::MetaSet { key: NFT_META_BRI_BROUTE, sreg: NFT_REG_1 });
        }
        Stmt::NotHostReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_PKTTYPE, dreg: NFT_REG_1 });
            // PACKET_HOST
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::NotIpReturn => {
            // [ payload load 2b @ link header + 12 => reg 1 ]
            // [ lookup reg 1 set __set%d 0x1 ] [ immediate reg 0 return ]
            let l = ip_ether_types_lookup(b);
            e.push(Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: 12, len: 2, dreg: NFT_REG_1 });
            e.push(l);
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::TcpNotSynReturn => {
            e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
            e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 13, len: 1, dreg: NFT_REG_1 });
            // fin 0x01 | syn 0x02 | rst 0x04 | ack 0x10
            e.push(Expr::Bitwise { sreg: NFT_REG_1, dreg: NFT_REG_1, mask: vec![0x17], xor: vec![0] });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0x02] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::BridgeBypassReturn { v6 } => {
            let (proto, offset, len, set) =
                if *v6 { (ETH_P_IPV6, 24, 16, SET_BYPASS6) } else { (ETH_P_IP, 16, 4, SET_BYPASS4) };
            e.extend(ether_type_eq(proto));
            e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
            e.push(lookup(set, ids, None));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::DnsRedirect { mark, l4, v6, port } => {
            e.extend(ct_mark_eq(*mark));
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            e.extend(dport_53(l4.proto()));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(port.to_be_bytes().to_vec()) });
            e.push(Expr::Redir { reg_proto: NFT_REG_1 });
        }
        Stmt::LocalNetReturn { v6, bridge } => {
            // [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x02 ]   (bridge: ether type)
            // [ payload load 4b @ network header + 16 => reg 1 ] [ lookup reg 1 set local-nets ]
            // [ immediate reg 0 return ]      = ip daddr @local-nets return
            let (offset, len, set) = if *v6 { (24, 16, SET_LOCAL6) } else { (16, 4, SET_LOCAL4) };
            if *bridge {
                e.extend(ether_type_eq(if *v6 { ETH_P_IPV6 } else { ETH_P_IP }));
            } else {
                e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            }
            e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
            e.push(lookup(set, ids, None));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::TailMatch { .. } | Stmt::TailEnd { .. } => e = super::tail_match::tail_exprs(b, s, ids),
    }
    e
}
