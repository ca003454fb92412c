//! The expression runs several statements share: a match (`meta`, `ct`,
//! `ether type`, `th dport 53`, a set lookup) or a mark to set, each as the
//! load-and-compare sequence `nft --debug=netlink` shows for it. Those that
//! look up an anonymous set add that set to the batch first.

use crate::names::{NETWORK_FLOW_LABEL, TABLE};
use crate::nft::batch::Batch;
use crate::nft::expr::{Data, Expr, meta_eq};
use crate::nft::sys::*;
use crate::ruleset::stmt::GwMatch;

use super::element::{Elem, element_msgs, interval_elements};
use super::set::{ANONYMOUS, SetIds, anonymous_set};

/// An anonymous constant set `{ tcp, udp }` bound to the next rule.
/// Returns the lookup of the L4 protocol in it.
pub fn tcp_udp_lookup(b: &mut Batch, invert: bool) -> Expr {
    let id = anonymous_set(b, "add set { tcp, udp }", 0, TYPE_INET_PROTOCOL, 1);
    let protos = [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8].map(|p| Elem::Key(vec![p]));
    element_msgs(b, ANONYMOUS, Some(id), true, protos, |_| "add element { tcp, udp }".into());
    Expr::Lookup { set: ANONYMOUS.into(), set_id: Some(id), sreg: NFT_REG_1, dreg: None, invert }
}

/// `!= { ip, ip6 }` on an ether type in register 1: an anonymous set bound
/// to the rule.
pub fn ip_ether_types_lookup(b: &mut Batch) -> Expr {
    let id = anonymous_set(b, "add set { ip, ip6 }", 0, TYPE_ETHERTYPE, 2);
    let types = [ETH_P_IP, ETH_P_IPV6].map(|t| Elem::Key(t.to_be_bytes().to_vec()));
    element_msgs(b, ANONYMOUS, Some(id), true, types, |_| "add element { ip, ip6 }".into());
    Expr::Lookup { set: ANONYMOUS.into(), set_id: Some(id), sreg: NFT_REG_1, dreg: None, invert: true }
}

/// A lookup of register 1 in a named set of our table (by id too when the
/// set is created in the same batch).
pub fn lookup(set: &str, ids: &SetIds, dreg: Option<u32>) -> Expr {
    Expr::Lookup { set: set.into(), set_id: ids.of(set), sreg: NFT_REG_1, dreg, invert: false }
}

/// `meta mark set MARK`
pub fn set_mark(mark: u32) -> [Expr; 2] {
    [
        Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(mark.to_ne_bytes().to_vec()) },
        Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 },
    ]
}

/// `ct KEY & BITS != 0` (`ct status dnat`, `ct state new`): the conntrack
/// word in register 1, masked, compared with zero.
pub fn ct_bits_set(key: u32, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: NFT_REG_1 },
        Expr::Bitwise { sreg: NFT_REG_1, dreg: NFT_REG_1, mask: bits.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] },
    ]
}

/// `ct mark MARK`
pub fn ct_mark_eq(mark: u32) -> [Expr; 2] {
    [
        Expr::Ct { key: NFT_CT_MARK, dreg: NFT_REG_1 },
        Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: mark.to_ne_bytes().to_vec() },
    ]
}

/// `ether type TYPE` (the bridge family's `ip`/`ip6` dependency)
pub fn ether_type_eq(ty: u16) -> [Expr; 2] {
    [
        Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: 12, len: 2, dreg: NFT_REG_1 },
        Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: ty.to_be_bytes().to_vec() },
    ]
}

/// `iifname "br-*"` / `meta ibrname "br-*"`, then `ip saddr { ... }` in an
/// anonymous interval set bound to the rule.
pub fn gw_match(b: &mut Batch, m: &GwMatch, bridge: bool) -> Vec<Expr> {
    let mut e = Vec::new();
    if let Some(iface) = &m.iface {
        let key = if bridge { NFT_META_BRI_IIFNAME } else { NFT_META_IIFNAME };
        e.extend(meta_eq(key, &iface.cmp_bytes()));
    }
    if let Some((v6, ranges)) = &m.source {
        let (len, key_type, offset) = if *v6 { (16, TYPE_IP6ADDR, 8) } else { (4, TYPE_IPADDR, 12) };
        if bridge {
            e.extend(ether_type_eq(if *v6 { ETH_P_IPV6 } else { ETH_P_IP }));
        } else {
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
        }
        let what = format!("add set {} {TABLE} (sources)", b.family_word());
        let id = anonymous_set(b, what, NFT_SET_INTERVAL, key_type, len as u32);
        interval_elements(b, ANONYMOUS, Some(id), ranges, len);
        e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len: len as u32, dreg: NFT_REG_1 });
        e.push(Expr::Lookup { set: ANONYMOUS.into(), set_id: Some(id), sreg: NFT_REG_1, dreg: None, invert: false });
    }
    e
}

/// `oif "lo"` (`oif != "lo"` unless `eq`): lo is ifindex 1 in every
/// network namespace.
pub fn oif_lo(eq: bool) -> [Expr; 2] {
    if_lo(NFT_META_OIF, eq)
}

/// `iif "lo"` (`iif != "lo"` unless `eq`).
pub fn iif_lo(eq: bool) -> [Expr; 2] {
    if_lo(NFT_META_IIF, eq)
}

fn if_lo(key: u32, eq: bool) -> [Expr; 2] {
    [
        Expr::MetaLoad { key, dreg: NFT_REG_1 },
        Expr::Cmp { op: if eq { NFT_CMP_EQ } else { NFT_CMP_NEQ }, sreg: NFT_REG_1, data: 1u32.to_ne_bytes().to_vec() },
    ]
}

/// Conntrack label bit [`NETWORK_FLOW_LABEL`] as the kernel's 128-bit label
/// word (an array of longs: bit N is byte N / 8, bit N % 8).
pub fn network_label() -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v[usize::from(NETWORK_FLOW_LABEL / 8)] = 1 << (NETWORK_FLOW_LABEL % 8);
    v
}

/// `ct direction reply ct label 127` (`ct label ! 127` unless `network`):
/// an answer, in a flow the network started or in one this host started.
pub fn reply_in_network_flow(network: bool) -> Vec<Expr> {
    let mut e = ct_dir_eq(IP_CT_DIR_REPLY).to_vec();
    e.push(Expr::Ct { key: NFT_CT_LABELS, dreg: NFT_REG_1 });
    e.push(Expr::Bitwise { sreg: NFT_REG_1, dreg: NFT_REG_1, mask: network_label(), xor: vec![0; 16] });
    e.push(Expr::Cmp { op: if network { NFT_CMP_NEQ } else { NFT_CMP_EQ }, sreg: NFT_REG_1, data: vec![0; 16] });
    e
}

/// `ct direction original|reply`
pub fn ct_dir_eq(dir: u8) -> [Expr; 2] {
    [
        Expr::Ct { key: NFT_CT_DIRECTION, dreg: NFT_REG_1 },
        Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![dir] },
    ]
}

/// `meta l4proto P th dport 53`
pub fn dport_53(proto: u8) -> Vec<Expr> {
    let mut e = meta_eq(NFT_META_L4PROTO, &[proto]).to_vec();
    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
    e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
    e
}
