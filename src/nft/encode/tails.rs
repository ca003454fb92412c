//! Conditional rules: the `tails` map and the `tail-N` chains (their
//! rules' expressions: `tail_match.rs`).

use crate::names::MAP_TAILS;
use crate::nft::batch::Batch;
use crate::nft::expr::Data;
use crate::nft::sys::*;
use crate::ruleset::Ruleset;
use crate::ruleset::tails::Tails;

use super::element::{Elem, elements};
use super::rule::rule;
use super::set::{SetData, SetIds, set};
use super::table::chain;

/// `add map inet cgtproxy tails { type mark : verdict; }`, when some rule
/// has conditions. Returns its set id.
pub fn tails_map(b: &mut Batch, rs: &Ruleset) -> Option<u32> {
    rs.tails.active().then(|| set(b, MAP_TAILS, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict))
}

/// The tails from number `from` on: `add chain inet cgtproxy tail-N`, its
/// rules, and `add element inet cgtproxy tails { CLASS : jump tail-N }`.
/// `chains`: false when the chains went in already (a full table adds
/// every chain first).
pub fn new_tails(b: &mut Batch, rs: &Ruleset, from: usize, map_id: Option<u32>, chains: bool) {
    add_tails(b, &rs.tails, from, map_id, chains);
}

fn add_tails(b: &mut Batch, tails: &Tails, from: usize, map_id: Option<u32>, chains: bool) {
    if chains {
        let ids = SetIds { tails: map_id, ..SetIds::default() };
        for c in tails.chains_from(from) {
            chain(b, &c);
            for s in &c.rules {
                rule(b, &c.name, s, &ids, None);
            }
        }
    }
    let items: Vec<Elem> = tails
        .elements_from(from)
        .into_iter()
        .map(|(class, c)| Elem::Mapping(class.to_ne_bytes().to_vec(), Data::Verdict(NFT_JUMP, Some(c.into()))))
        .collect();
    if !items.is_empty() {
        elements(b, MAP_TAILS, map_id, true, items);
    }
}
