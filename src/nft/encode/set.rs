//! Sets and maps: the named ones of our table (`add set|map`), with the
//! udata `nft list` needs to print their keys, and the anonymous constant
//! sets a rule binds (`{ tcp, udp }`, a gateway entry's sources).

use crate::names::{
    MAP_CGROUP, MAP_FLOW_CLASS, MAP_FLOW_TOKEN, MAP_FLOW_VERDICT, MAP_MARK, MAP_MARK_DNS, SET_BYPASS4, SET_BYPASS6,
    SET_LOCAL4, SET_LOCAL6, TABLE,
};
use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL};
use crate::nft::batch::Batch;
use crate::nft::sys::*;

/// Set ids of the named sets created in this batch, so rules can refer to
/// them before the commit gives them handles.
#[derive(Debug, Default, Clone)]
pub struct SetIds {
    pub bypass4: Option<u32>,
    pub bypass6: Option<u32>,
    pub cgroup: Option<u32>,
    pub mark: Option<u32>,
    pub mark_dns: Option<u32>,
    pub local4: Option<u32>,
    pub local6: Option<u32>,
    pub flow_class: Option<u32>,
    pub flow_token: Option<u32>,
    pub flow_verdict: Option<u32>,
    pub tails: Option<u32>,
    /// The dynamic named sets' kernel sets, by name.
    pub named: Vec<(String, u32)>,
}

impl SetIds {
    pub fn of(&self, name: &str) -> Option<u32> {
        match name {
            SET_BYPASS4 => self.bypass4,
            SET_BYPASS6 => self.bypass6,
            MAP_CGROUP => self.cgroup,
            MAP_MARK => self.mark,
            MAP_MARK_DNS => self.mark_dns,
            SET_LOCAL4 => self.local4,
            SET_LOCAL6 => self.local6,
            MAP_FLOW_CLASS => self.flow_class,
            MAP_FLOW_TOKEN => self.flow_token,
            MAP_FLOW_VERDICT => self.flow_verdict,
            crate::names::MAP_TAILS => self.tails,
            _ => self.named.iter().find(|(n, _)| n == name).map(|(_, id)| *id),
        }
    }
}

/// What a set maps its keys to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetData {
    /// A plain set.
    None,
    /// A verdict map.
    Verdict,
    /// A data map to a mark-sized value (host order).
    Mark,
    /// Like `Mark`, with a packet/byte counter on every element.
    CountedMark,
}

/// `add set|map inet cgtproxy NAME { type KEY [: verdict]; flags ...; }`
/// Returns the set id.
pub fn set(b: &mut Batch, name: &str, flags: u32, key_type: u32, key_len: u32, data: SetData) -> u32 {
    let id = b.set_id();
    let what = format!("add {} {} {TABLE} {name}", if data == SetData::None { "set" } else { "map" }, b.family_word());
    let m = begin_set(b, what, name, flags, key_type, key_len);
    match data {
        SetData::None => {}
        SetData::Verdict => {
            b.w.u32be(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            b.w.u32be(NFTA_SET_DATA_LEN, 0);
        }
        SetData::Mark | SetData::CountedMark => {
            b.w.u32be(NFTA_SET_DATA_TYPE, TYPE_MARK);
            b.w.u32be(NFTA_SET_DATA_LEN, 4);
        }
    }
    if data == SetData::CountedMark {
        // `counter` in the set: each element gets its own, updated when a
        // lookup finds it.
        let x = b.w.nest(NFTA_SET_EXPR);
        b.w.str(NFTA_EXPR_NAME, "counter");
        let d = b.w.nest(NFTA_EXPR_DATA);
        b.w.u64be(NFTA_COUNTER_BYTES, 0);
        b.w.u64be(NFTA_COUNTER_PACKETS, 0);
        b.w.nest_end(d);
        b.w.nest_end(x);
    }
    b.w.u32be(NFTA_SET_ID, id);
    // Only for `nft list`: how to print keys. Marks and cgroup ids are in
    // host order (as `meta mark` and `socket cgroupv2` load them), addresses
    // in network order. libnftnl's udata: u8 type, u8 length, value.
    let order =
        if key_type == TYPE_IPADDR || key_type == TYPE_IP6ADDR { BYTEORDER_BIG_ENDIAN } else { BYTEORDER_HOST_ENDIAN };
    let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
    udata.extend_from_slice(&order.to_ne_bytes());
    if matches!(data, SetData::Mark | SetData::CountedMark) {
        udata.extend_from_slice(&[NFTNL_UDATA_SET_DATABYTEORDER, 4]);
        udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
    }
    b.w.attr(NFTA_SET_USERDATA, &udata);
    b.end(m);
    id
}

/// The name the kernel replaces with `__setN` for an anonymous set; rules
/// and element lists refer to the set by it (and by its set id) within the
/// batch.
pub const ANONYMOUS: &str = "__set%d";

/// `add set TABLE __set%d { type KEY; flags constant[, interval]; }`: an
/// anonymous set, bound to the rule that follows, described as `what` in
/// errors. Returns its set id.
pub fn anonymous_set(b: &mut Batch, what: impl Into<String>, flags: u32, key_type: u32, key_len: u32) -> u32 {
    let id = b.set_id();
    let m = begin_set(b, what, ANONYMOUS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | flags, key_type, key_len);
    b.w.u32be(NFTA_SET_ID, id);
    b.end(m);
    id
}

/// Start an NFT_MSG_NEWSET message with what every set has: table, name,
/// flags and key; the caller adds the rest and ends it.
fn begin_set(b: &mut Batch, what: impl Into<String>, name: &str, flags: u32, key_type: u32, key_len: u32) -> usize {
    let m = b.begin(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, what);
    let t = b.table.clone();
    b.w.str(NFTA_SET_TABLE, &t);
    b.w.str(NFTA_SET_NAME, name);
    b.w.u32be(NFTA_SET_FLAGS, flags);
    b.w.u32be(NFTA_SET_KEY_TYPE, key_type);
    b.w.u32be(NFTA_SET_KEY_LEN, key_len);
    m
}
