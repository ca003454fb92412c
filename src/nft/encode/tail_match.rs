//! A tail chain's rules as expressions: a condition's matches (a
//! destination, protocols, ports) and the class it sets, as `nft
//! --debug=netlink` shows them.

use crate::nft::batch::Batch;
use crate::nft::expr::{Data, Expr, meta_eq};
use crate::nft::sys::*;
use crate::ruleset::cond::Dest;
use crate::ruleset::stmt::Stmt;

use super::element::{Elem, element_msgs, interval_elements};
use super::matches::lookup;
use super::set::{ANONYMOUS, SetIds, anonymous_set};

/// nftables' `inet_service` type (a port).
const TYPE_INET_SERVICE: u32 = 13;

/// The expressions of a tail chain's rules.
pub fn tail_exprs(b: &mut Batch, s: &Stmt, ids: &SetIds) -> Vec<Expr> {
    let mut e = Vec::new();
    let (class, ret) = match s {
        Stmt::TailMatch { m, class } => {
            // [ meta load nfproto ] [ cmp eq ipv4 ] [ payload load 4b @ network header + 16 ]
            // [ lookup reg 1 set __set%d ] [ meta load l4proto ] [ cmp eq 17 ]
            // [ payload load 2b @ transport header + 2 ] [ cmp eq 0x0000bb01 ] ...
            if let Some((v6, dest)) = &m.dest {
                let (proto, offset, len, ty) =
                    if *v6 { (NFPROTO_IPV6, 24, 16, TYPE_IP6ADDR) } else { (NFPROTO_IPV4, 16, 4, TYPE_IPADDR) };
                e.extend(meta_eq(NFT_META_NFPROTO, &[proto]));
                let l = match dest {
                    Dest::Ranges(r) => {
                        let what = format!("add set {} (destinations)", b.family_word());
                        let id = anonymous_set(b, what, NFT_SET_INTERVAL, ty, len);
                        interval_elements(b, ANONYMOUS, Some(id), r, len as usize);
                        Expr::Lookup {
                            set: ANONYMOUS.into(),
                            set_id: Some(id),
                            sreg: NFT_REG_1,
                            dreg: None,
                            invert: false,
                        }
                    }
                    Dest::Set(name) => lookup(name, ids, None),
                };
                e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
                e.push(l);
            }
            if let Some(v6) = m.family {
                e.extend(meta_eq(NFT_META_NFPROTO, &[if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            }
            match m.protos.as_slice() {
                [] => {}
                [one] => e.extend(meta_eq(NFT_META_L4PROTO, &[*one])),
                many => {
                    let id = anonymous_set(b, "add set (protocols)", 0, TYPE_INET_PROTOCOL, 1);
                    let items = many.iter().map(|p| Elem::Key(vec![*p]));
                    element_msgs(b, ANONYMOUS, Some(id), true, items, |_| "add element (protocols)".into());
                    e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
                    e.push(Expr::Lookup {
                        set: ANONYMOUS.into(),
                        set_id: Some(id),
                        sreg: NFT_REG_1,
                        dreg: None,
                        invert: false,
                    });
                }
            }
            match m.ports.as_slice() {
                [] => {}
                [(a, b_)] if a == b_ => {
                    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                    e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: a.to_be_bytes().to_vec() });
                }
                many => {
                    let ranged = many.iter().any(|(a, z)| a != z);
                    let flags = if ranged { NFT_SET_INTERVAL } else { 0 };
                    let id = anonymous_set(b, "add set (ports)", flags, TYPE_INET_SERVICE, 2);
                    let mut items = Vec::new();
                    for &(a, z) in many {
                        items.push(Elem::Key(a.to_be_bytes().to_vec()));
                        if ranged && z < u16::MAX {
                            items.push(Elem::IntervalEnd((z + 1).to_be_bytes().to_vec()));
                        }
                    }
                    element_msgs(b, ANONYMOUS, Some(id), true, items, |_| "add element (ports)".into());
                    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                    e.push(Expr::Lookup {
                        set: ANONYMOUS.into(),
                        set_id: Some(id),
                        sreg: NFT_REG_1,
                        dreg: None,
                        invert: false,
                    });
                }
            }
            (*class, true)
        }
        Stmt::TailEnd { class } => (*class, false),
        _ => unreachable!("tail_exprs is for tail statements"),
    };
    // [ immediate reg 1 CLASS ] [ meta set mark with reg 1 ] [ immediate reg 0 return ]
    e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(class.to_ne_bytes().to_vec()) });
    e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
    if ret {
        e.push(crate::nft::expr::verdict(NFT_RETURN, None));
    }
    e
}
