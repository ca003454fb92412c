//! Tables and chains: `add|delete table`, `add chain` (base chains with
//! their hook, priority and policy).

use crate::names::TABLE;
use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL};
use crate::nft::batch::Batch;
use crate::nft::sys::*;
use crate::ruleset::Chain;

/// `add|delete table inet cgtproxy`
pub fn table(b: &mut Batch, msg: u16, flags: u16, what: &str) {
    let m = b.begin(msg, flags, what);
    let t = b.table.clone();
    b.w.str(NFTA_TABLE_NAME, &t);
    b.end(m);
}

/// `add chain inet cgtproxy NAME [{ type T hook H priority P; policy accept; }]`
pub fn chain(b: &mut Batch, c: &Chain) {
    let what = format!("add chain {} {TABLE} {}", b.family_word(), c.name);
    let m = b.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, what);
    let t = b.table.clone();
    b.w.str(NFTA_CHAIN_TABLE, &t);
    b.w.str(NFTA_CHAIN_NAME, &c.name);
    if let Some(h) = c.hook {
        let n = b.w.nest(NFTA_CHAIN_HOOK);
        let hooknum = match h.hook {
            "prerouting" => NF_INET_PRE_ROUTING,
            "postrouting" => NF_INET_POST_ROUTING,
            "forward" => NF_INET_FORWARD,
            _ => NF_INET_LOCAL_OUT,
        };
        b.w.u32be(NFTA_HOOK_HOOKNUM, hooknum);
        b.w.u32be(NFTA_HOOK_PRIORITY, h.priority as u32);
        b.w.nest_end(n);
        b.w.u32be(NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
        b.w.str(NFTA_CHAIN_TYPE, h.kind);
    }
    b.end(m);
}
