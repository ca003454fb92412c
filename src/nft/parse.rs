//! Reading the rule and counter attributes of nf_tables messages the kernel
//! sends, whether a dump reply or a notification: which rule is which
//! `socket cgroupv2 level`, a rule's handle, a `counter`'s values.

use crate::netlink::attrs;

use super::sys::*;

/// (level, handle) of a `socket cgroupv2 level N` rule in `classify`, from
/// an NFT_MSG_NEWRULE payload (nfgenmsg and attributes): a dump reply or a
/// notification.
pub fn level_rule(payload: &[u8]) -> Option<(u32, u64)> {
    let (mut handle, mut level, mut chain_ok) = (None, None, false);
    for (ty, v) in attrs(payload.get(4..)?) {
        match ty {
            NFTA_RULE_CHAIN => chain_ok = v.strip_suffix(b"\0") == Some(crate::names::CHAIN_CLASSIFY.as_bytes()),
            NFTA_RULE_HANDLE => handle = <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes),
            NFTA_RULE_EXPRESSIONS => {
                for (_, elem) in attrs(v) {
                    let mut is_socket = false;
                    for (ety, ev) in attrs(elem) {
                        if ety == NFTA_EXPR_NAME {
                            is_socket = ev == b"socket\0";
                        } else if ety == NFTA_EXPR_DATA && is_socket {
                            for (sty, sv) in attrs(ev) {
                                if sty == NFTA_SOCKET_LEVEL {
                                    level = <[u8; 4]>::try_from(sv).ok().map(u32::from_be_bytes);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if chain_ok { Some((level?, handle?)) } else { None }
}

/// The handle of a rule message (NFTA_RULE_HANDLE).
pub fn rule_handle(payload: &[u8]) -> Option<u64> {
    attrs(payload.get(4..)?)
        .find(|(t, _)| *t == NFTA_RULE_HANDLE)
        .and_then(|(_, v)| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
}

/// (packets, bytes) of a `counter` expression (NFTA_EXPR_NAME + DATA).
pub(super) fn parse_counter(expr: &[u8]) -> Option<(u64, u64)> {
    let mut is_counter = false;
    let mut out = None;
    for (ty, v) in attrs(expr) {
        match ty {
            NFTA_EXPR_NAME => is_counter = v == b"counter\0",
            NFTA_EXPR_DATA if is_counter => {
                let (mut packets, mut bytes) = (0, 0);
                for (cty, cv) in attrs(v) {
                    let n = <[u8; 8]>::try_from(cv).map(u64::from_be_bytes).unwrap_or(0);
                    match cty {
                        NFTA_COUNTER_PACKETS => packets = n,
                        NFTA_COUNTER_BYTES => bytes = n,
                        _ => {}
                    }
                }
                out = Some((packets, bytes));
            }
            _ => {}
        }
    }
    out
}
