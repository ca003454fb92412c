//! The desired [`Ruleset`] as nf_tables netlink messages, one file per
//! kernel object: `table.rs` (tables, chains), `set.rs` (named and
//! anonymous sets), `element.rs` (set and map elements), `rule.rs` (rules)
//! with `stmt.rs` (statements as expressions) and `matches.rs` (the
//! expression runs statements share). Here: whole tables built from those.

mod element;
mod matches;
mod rule;
mod set;
mod stmt;
mod table;
mod tail_match;
mod tails;

pub use element::{Elem, cgroup_elements, delete_cgroup_elements, elements, flow_elements};
pub use rule::rule;
pub use set::SetIds;
pub use stmt::exprs;
pub use table::table;
pub use tails::{new_tails, tails_map};

use crate::names::{
    MAP_CGROUP, MAP_FLOW_CLASS, MAP_FLOW_TOKEN, MAP_FLOW_VERDICT, MAP_MARK, MAP_MARK_DNS, SET_BYPASS4, SET_BYPASS6,
    SET_LOCAL4, SET_LOCAL6, TABLE,
};
use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL};
use crate::ruleset::stmt::GwMatch;
use crate::ruleset::{Chain, Ruleset, Stmt};

use super::batch::Batch;
use super::expr::Data;
use super::sys::*;

use element::interval_elements;
use matches::gw_match;
use rule::rule_exprs;
use set::{SetData, set};
use table::chain;

/// The whole table, replacing any table of that name (a stale one from a
/// killed instance included), in one transaction.
pub fn full(b: &mut Batch, rs: &Ruleset) {
    full_keeping(b, rs, &[]);
}

/// [`full`], putting back `kept`: the elements other programs had added to
/// the dynamic named sets, by kernel set name.
pub fn full_keeping(b: &mut Batch, rs: &Ruleset, kept: &[(String, Vec<Elem>)]) {
    replace_table(b);
    let bypass = bypass_sets(b, rs);
    let ids = SetIds {
        cgroup: Some(set(
            b,
            MAP_CGROUP,
            if rs.counters { NFT_SET_MAP | NFT_SET_EXPR } else { NFT_SET_MAP },
            TYPE_CGROUPV2,
            8,
            if rs.counters { SetData::CountedMark } else { SetData::Mark },
        )),
        mark: Some(set(b, MAP_MARK, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict)),
        mark_dns: Some(set(b, MAP_MARK_DNS, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict)),
        named: dynamic_named_sets(b, rs),
        ..bypass
    };
    let ids = if rs.flow_mask != 0 {
        SetIds {
            flow_class: Some(set(b, MAP_FLOW_CLASS, NFT_SET_MAP, TYPE_MARK, 4, SetData::Mark)),
            flow_token: Some(set(b, MAP_FLOW_TOKEN, NFT_SET_MAP, TYPE_MARK, 4, SetData::Mark)),
            flow_verdict: Some(set(b, MAP_FLOW_VERDICT, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict)),
            ..ids
        }
    } else {
        ids
    };
    let ids = SetIds { tails: tails_map(b, rs), ..ids };
    bypass_elements(b, rs, &ids);
    chains_and_rules(b, &rs.chains(), &ids);
    new_tails(b, rs, 0, ids.tails, false);
    let marks: Vec<Elem> = rs
        .tproxies
        .iter()
        .map(|t| {
            Elem::Mapping(
                t.mark.to_ne_bytes().to_vec(),
                Data::Verdict(NFT_GOTO, Some(crate::names::tproxy_chain(&t.name).into())),
            )
        })
        .collect();
    elements(b, MAP_MARK, ids.mark, true, marks);
    let dns: Vec<_> = rs
        .tproxies
        .iter()
        .filter(|t| t.dns_hijack.is_some())
        .map(|t| {
            let goto = Data::Verdict(NFT_GOTO, Some(crate::names::dns_chain(&t.name).into()));
            Elem::Mapping(t.mark.to_ne_bytes().to_vec(), goto)
        })
        .collect();
    elements(b, MAP_MARK_DNS, ids.mark_dns, true, dns);
    flow_elements(b, rs, (ids.flow_class, ids.flow_token, ids.flow_verdict), false);
    cgroup_elements(b, rs.elements.iter(), ids.cgroup);
    for (set, items) in kept.iter().filter(|(s, items)| ids.named.iter().any(|(n, _)| n == s) && !items.is_empty()) {
        elements(b, set, ids.of(set), true, items.iter().cloned());
    }
    bridge_table(b, rs);
}

/// `table bridge cgtproxy` (gateway brouting), replacing a stale one, in the
/// same batch as the inet table. Nothing when no gateway entry needs it.
pub fn bridge_table(b: &mut Batch, rs: &Ruleset) {
    let chains = rs.bridge_chains();
    if chains.is_empty() {
        return;
    }
    let family = std::mem::replace(&mut b.family, NFPROTO_BRIDGE);
    replace_table(b);
    let ids = bypass_sets(b, rs);
    bypass_elements(b, rs, &ids);
    chains_and_rules(b, &chains, &ids);
    b.family = family;
}

/// Gateway mode's `local-nets`/`local-nets6` of both tables replaced by
/// `rs`'s, in one transaction: `flush set inet cgtproxy local-nets; add
/// element inet cgtproxy local-nets { ... }` (a DELSETELEM without an
/// element list flushes the set). Chains, rules and counters stay.
pub fn local_nets(b: &mut Batch, rs: &Ruleset) {
    let family = b.family;
    let tables = if rs.has_bridge_table() { vec![family, NFPROTO_BRIDGE] } else { vec![family] };
    for f in tables {
        b.family = f;
        for (name, ranges, len) in [(SET_LOCAL4, &rs.local4, 4), (SET_LOCAL6, &rs.local6, 16)] {
            let what = format!("flush set {} {} {name}", b.family_word(), b.table);
            let m = b.begin(NFT_MSG_DELSETELEM, 0, what);
            let table = b.table.clone();
            b.w.str(NFTA_SET_ELEM_LIST_TABLE, &table);
            b.w.str(NFTA_SET_ELEM_LIST_SET, name);
            b.end(m);
            interval_elements(b, name, None, ranges, len);
        }
    }
    b.family = family;
}

/// `add table F cgtproxy; delete table F cgtproxy; add table F cgtproxy`:
/// the first add makes the delete valid whether or not a table exists, so
/// a stale table of a killed instance goes in the same transaction.
fn replace_table(b: &mut Batch) {
    let family = b.family_word();
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, &format!("add table {family} {TABLE}"));
    table(b, NFT_MSG_DELTABLE, 0, &format!("delete table {family} {TABLE}"));
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, &format!("add table {family} {TABLE}"));
}

/// The `bypass` and `bypass6` interval sets (their elements come later:
/// after the maps in the inet table).
/// With gateway tproxy entries also `local-nets` and `local-nets6`.
fn bypass_sets(b: &mut Batch, rs: &Ruleset) -> SetIds {
    let ids = SetIds {
        bypass4: Some(set(b, SET_BYPASS4, NFT_SET_INTERVAL, TYPE_IPADDR, 4, SetData::None)),
        bypass6: Some(set(b, SET_BYPASS6, NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, SetData::None)),
        ..SetIds::default()
    };
    if !rs.has_local_sets() {
        return ids;
    }
    SetIds {
        local4: Some(set(b, SET_LOCAL4, NFT_SET_INTERVAL, TYPE_IPADDR, 4, SetData::None)),
        local6: Some(set(b, SET_LOCAL6, NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, SetData::None)),
        ..ids
    }
}

/// `add set inet cgtproxy NAME { type ipv4_addr; flags interval,timeout; }`
/// and `NAME6` (ipv6_addr) for each dynamic named set.
fn dynamic_named_sets(b: &mut Batch, rs: &Ruleset) -> Vec<(String, u32)> {
    let mut ids = Vec::new();
    for name in &rs.dynamic_sets {
        let [v4, v6] = crate::names::dynamic_sets(name);
        let flags = NFT_SET_INTERVAL | NFT_SET_TIMEOUT;
        ids.push((v4.clone(), set(b, &v4, flags, TYPE_IPADDR, 4, SetData::None)));
        ids.push((v6.clone(), set(b, &v6, flags, TYPE_IP6ADDR, 16, SetData::None)));
    }
    ids
}

fn bypass_elements(b: &mut Batch, rs: &Ruleset, ids: &SetIds) {
    interval_elements(b, SET_BYPASS4, ids.bypass4, &rs.bypass4, 4);
    interval_elements(b, SET_BYPASS6, ids.bypass6, &rs.bypass6, 16);
    if rs.has_local_sets() {
        interval_elements(b, SET_LOCAL4, ids.local4, &rs.local4, 4);
        interval_elements(b, SET_LOCAL6, ids.local6, &rs.local6, 16);
    }
}

/// Every chain, then every rule: map elements and rules may goto any chain.
fn chains_and_rules(b: &mut Batch, chains: &[Chain], ids: &SetIds) {
    for c in chains {
        chain(b, c);
    }
    for c in chains {
        for s in &c.rules {
            rule(b, &c.name, s, ids, None);
        }
    }
}

/// A bridge table with one brouting rule, for `Nft::can_broute`:
/// `meta ibrname "x*" meta mark set 1 meta broute set 1`, in a prerouting
/// chain (`hooked`, so the kernel validates the hook too) or in a chain no
/// packet reaches (a probe table that must outlive a batch).
pub fn probe_broute(b: &mut Batch, hooked: bool) {
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add scratch bridge table");
    let c = Chain {
        name: "probe".into(),
        hook: hooked.then_some(crate::ruleset::Hook {
            kind: "filter",
            hook: "prerouting",
            priority: crate::ruleset::PRIO_BRIDGE_FILTER,
            priority_name: "filter",
        }),
        rules: Vec::new(),
    };
    chain(b, &c);
    let m = GwMatch { iface: Some(crate::config::Iface::Prefix("x".into())), source: None };
    let mut e = gw_match(b, &m, true);
    e.extend(exprs(b, &Stmt::Broute { mark: 1 }, &SetIds::default()));
    rule_exprs(b, "probe", &e, None, "add rule bridge (probe) meta broute set 1".into());
}
