//! Elements other programs added to the dynamic named sets (`sets: {NAME:
//! {dynamic: true}}`): read before a full apply replaces the table, and
//! put back in the same batch, so self-heal, reload and a restart keep
//! them (with what is left of their timeouts).

use crate::names::TABLE;
use crate::netlink::{NLM_F_DUMP, attrs};
use crate::ruleset::Ruleset;

use super::encode::{self, Elem};
use super::error::NftError;
use super::handle::Nft;
use super::sys::*;

impl Nft {
    /// The elements of `set` in `table inet cgtproxy`; empty when the table
    /// or set is not there.
    pub fn kept_elements(&mut self, set: &str) -> Result<Vec<Elem>, NftError> {
        let req = self.get(NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, set);
        });
        let mut out = Vec::new();
        let what = format!("list set inet {TABLE} {set}");
        let got = self.sock.dump(&req, &what, |_, payload| {
            for (_, list) in
                attrs(payload.get(4..).unwrap_or_default()).filter(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
            {
                for (_, elem) in attrs(list) {
                    let (mut key, mut flags, mut left) = (None, 0, None);
                    for (t, v) in attrs(elem) {
                        match t {
                            NFTA_SET_ELEM_KEY => {
                                key = attrs(v).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|(_, v)| v.to_vec())
                            }
                            NFTA_SET_ELEM_FLAGS => flags = <[u8; 4]>::try_from(v).map(u32::from_be_bytes).unwrap_or(0),
                            NFTA_SET_ELEM_EXPIRATION => left = <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes),
                            _ => {}
                        }
                    }
                    if let Some(key) = key {
                        out.push(Elem::Kept { key, flags, timeout_ms: left });
                    }
                }
            }
        });
        match got {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(out),
        }
    }

    /// Replace the whole table with `rs`, keeping what others added to its
    /// dynamic named sets.
    pub fn apply_full_keeping(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        let mut kept = Vec::new();
        for name in &rs.dynamic_sets {
            for set in crate::names::dynamic_sets(name) {
                let items = self.kept_elements(&set)?;
                kept.push((set, items));
            }
        }
        let mut b = self.batch();
        encode::full_keeping(&mut b, rs, &kept);
        self.commit(b)
    }
}
