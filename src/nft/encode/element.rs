//! Set and map elements: `add|delete element`, split into messages that fit
//! a netlink attribute; interval sets as start/end pairs; the
//! `cgroup-class` map's `ID : CLASS` elements.

use crate::names::{
    CHAIN_FLOW_DIRECT, CHAIN_FLOW_DROP, CLASS_DIRECT, CLASS_DROP, MAP_CGROUP, MAP_FLOW_CLASS, MAP_FLOW_TOKEN,
    MAP_FLOW_VERDICT,
};
use crate::netlink::{MsgWriter, NLM_F_CREATE};
use crate::nft::batch::Batch;
use crate::nft::expr::{Data, encode_data};
use crate::nft::sys::*;
use crate::ruleset::{Element, Interval, Ruleset};

/// Keep each element list under the 64 KiB limit of a netlink attribute.
const ELEMENTS_BYTES: usize = 60_000;

/// One set element as sent to the kernel.
#[derive(Debug, Clone)]
pub enum Elem {
    /// A key alone (set element, or a key to delete).
    Key(Vec<u8>),
    /// The first address after an interval (NFT_SET_ELEM_INTERVAL_END).
    IntervalEnd(Vec<u8>),
    /// A map element.
    Mapping(Vec<u8>, Data),
    /// An element another program added to a dynamic named set, put back as
    /// it was: its flags (an interval's end) and what was left of its
    /// timeout, in milliseconds.
    Kept { key: Vec<u8>, flags: u32, timeout_ms: Option<u64> },
}

impl Elem {
    pub fn encode(&self, w: &mut MsgWriter) {
        let e = w.nest(NFTA_LIST_ELEM);
        match self {
            Elem::Key(k) => encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone())),
            Elem::IntervalEnd(k) => {
                encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone()));
                w.u32be(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            Elem::Mapping(k, d) => {
                encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone()));
                encode_data(w, NFTA_SET_ELEM_DATA, d);
            }
            Elem::Kept { key, flags, timeout_ms } => {
                encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(key.clone()));
                if *flags != 0 {
                    w.u32be(NFTA_SET_ELEM_FLAGS, *flags);
                }
                if let Some(ms) = timeout_ms {
                    w.u64be(NFTA_SET_ELEM_TIMEOUT, (*ms).max(1));
                }
            }
        }
        w.nest_end(e);
    }
}

/// `add|delete element inet cgtproxy SET { ... }`, in as many messages as
/// their size needs.
pub fn elements(b: &mut Batch, set: &str, set_id: Option<u32>, add: bool, items: impl IntoIterator<Item = Elem>) {
    let verb = if add { "add" } else { "delete" };
    let head = format!("{verb} element {} {} {set}", b.family_word(), b.table);
    element_msgs(b, set, set_id, add, items, |count| format!("{head} (from #{count})"));
}

/// The element messages of [`elements`], the one starting at the n-th
/// element described as `what(n)` in errors.
pub fn element_msgs(
    b: &mut Batch,
    set: &str,
    set_id: Option<u32>,
    add: bool,
    items: impl IntoIterator<Item = Elem>,
    what: impl Fn(usize) -> String,
) {
    let (msg, flags) = if add { (NFT_MSG_NEWSETELEM, NLM_F_CREATE) } else { (NFT_MSG_DELSETELEM, 0) };
    let mut open: Option<(usize, usize)> = None;
    for (count, item) in items.into_iter().enumerate() {
        if let Some((m, list)) = open
            && b.w.len() - list > ELEMENTS_BYTES
        {
            b.w.nest_end(list);
            b.end(m);
            open = None;
        }
        if open.is_none() {
            let m = b.begin(msg, flags, what(count));
            let table = b.table.clone();
            b.w.str(NFTA_SET_ELEM_LIST_TABLE, &table);
            b.w.str(NFTA_SET_ELEM_LIST_SET, set);
            if let Some(id) = set_id {
                b.w.u32be(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            open = Some((m, b.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS)));
        }
        item.encode(&mut b.w);
    }
    if let Some((m, list)) = open {
        b.w.nest_end(list);
        b.end(m);
    }
}

/// Interval set elements: each range is a start element and an end element
/// (the address after the range, flagged INTERVAL_END), as `nft` sends them.
pub fn interval_elements(b: &mut Batch, set: &str, id: Option<u32>, ranges: &[Interval], len: usize) {
    let key =
        |x: u128| -> Vec<u8> { if len == 4 { (x as u32).to_be_bytes().to_vec() } else { x.to_be_bytes().to_vec() } };
    let max = if len == 4 { u128::from(u32::MAX) } else { u128::MAX };
    let mut items = Vec::new();
    for &(start, end) in ranges {
        items.push(Elem::Key(key(start)));
        if end < max {
            items.push(Elem::IntervalEnd(key(end + 1)));
        }
    }
    elements(b, set, id, true, items);
}

/// `add element inet cgtproxy cgroup-class { ID : CLASS, ... }`
pub fn cgroup_elements<'a>(b: &mut Batch, items: impl Iterator<Item = (&'a u64, &'a Element)>, id: Option<u32>) {
    let list = items
        .map(|(cg, e)| Elem::Mapping(cg.to_ne_bytes().to_vec(), Data::Value(e.verdict.class().to_ne_bytes().to_vec())));
    elements(b, MAP_CGROUP, id, true, list);
}

/// `delete element inet cgtproxy cgroup-class { ID, ... }`
pub fn delete_cgroup_elements(b: &mut Batch, ids: &[u64]) {
    let list = ids.iter().map(|cg| Elem::Key(cg.to_ne_bytes().to_vec()));
    elements(b, MAP_CGROUP, None, false, list);
}

/// The flow cache of this generation: `add element ... flow-class { TOKEN
/// : CLASS, ... }` and `flow-token { CLASS : TOKEN, ... }` (class 0, no
/// level decided, cached as direct). `flush` first replaces the previous
/// generation's (`flush map ...`), in the same batch as the change that
/// made it stale.
pub fn flow_elements(b: &mut Batch, rs: &Ruleset, ids: (Option<u32>, Option<u32>, Option<u32>), flush: bool) {
    if rs.flow_mask == 0 {
        return;
    }
    if flush {
        for map in [MAP_FLOW_CLASS, MAP_FLOW_TOKEN, MAP_FLOW_VERDICT] {
            let what = format!("flush map {} {} {map}", b.family_word(), b.table);
            let m = b.begin(NFT_MSG_DELSETELEM, 0, what);
            let table = b.table.clone();
            b.w.str(NFTA_SET_ELEM_LIST_TABLE, &table);
            b.w.str(NFTA_SET_ELEM_LIST_SET, map);
            b.end(m);
        }
    }
    let tokens = rs.flow_tokens();
    let value = |x: u32| x.to_ne_bytes().to_vec();
    let by_token = tokens.iter().map(|&(c, t)| Elem::Mapping(value(t), Data::Value(value(c))));
    elements(b, MAP_FLOW_CLASS, ids.0, true, by_token);
    let mut by_class: Vec<Elem> = tokens.iter().map(|&(c, t)| Elem::Mapping(value(c), Data::Value(value(t)))).collect();
    if let Some(&(_, direct)) = tokens.iter().find(|(c, _)| *c == CLASS_DIRECT) {
        by_class.push(Elem::Mapping(value(0), Data::Value(value(direct))));
    }
    elements(b, MAP_FLOW_TOKEN, ids.1, true, by_class);
    // `flow-verdict { DIRECT-TOKEN : goto flow-direct, DROP-TOKEN : goto flow-drop }`
    let fast = tokens.iter().filter_map(|&(c, t)| match c {
        CLASS_DIRECT => Some(Elem::Mapping(value(t), Data::Verdict(NFT_GOTO, Some(CHAIN_FLOW_DIRECT.into())))),
        CLASS_DROP => Some(Elem::Mapping(value(t), Data::Verdict(NFT_GOTO, Some(CHAIN_FLOW_DROP.into())))),
        _ => None,
    });
    elements(b, MAP_FLOW_VERDICT, ids.2, true, fast);
}
