//! Rules: `add rule` (appended) and `insert rule ... position HANDLE`,
//! their expressions from `stmt.rs`.

use crate::names::TABLE;
use crate::netlink::{NLM_F_APPEND, NLM_F_CREATE};
use crate::nft::batch::Batch;
use crate::nft::expr::Expr;
use crate::nft::sys::*;
use crate::ruleset::Stmt;

use super::set::SetIds;
use super::stmt::exprs;

/// `add rule inet cgtproxy CHAIN STMT`, appended; or, with `before`, `insert
/// rule inet cgtproxy CHAIN position HANDLE STMT` (placed before HANDLE).
pub fn rule(b: &mut Batch, chain: &str, s: &Stmt, ids: &SetIds, before: Option<u64>) {
    let exprs = exprs(b, s, ids);
    let verb = if before.is_some() { "insert" } else { "add" };
    let what = format!("{verb} rule {} {TABLE} {chain} {s}", b.family_word());
    rule_exprs(b, chain, &exprs, before, what);
}

/// The rule message itself, for expressions already built (and any
/// anonymous set they look up already in the batch); `what` is its `nft`
/// command, for errors.
pub fn rule_exprs(b: &mut Batch, chain: &str, exprs: &[Expr], before: Option<u64>, what: String) {
    // Without a position the kernel inserts at the start of the chain
    // unless told to append.
    let flags = if before.is_some() { NLM_F_CREATE } else { NLM_F_CREATE | NLM_F_APPEND };
    let m = b.begin(NFT_MSG_NEWRULE, flags, what);
    let t = b.table.clone();
    b.w.str(NFTA_RULE_TABLE, &t);
    b.w.str(NFTA_RULE_CHAIN, chain);
    if let Some(handle) = before {
        b.w.u64be(NFTA_RULE_POSITION, handle);
    }
    let list = b.w.nest(NFTA_RULE_EXPRESSIONS);
    for x in exprs {
        x.encode(&mut b.w);
    }
    b.w.nest_end(list);
    b.end(m);
}
