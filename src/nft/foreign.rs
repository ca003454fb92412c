//! The user's own sets that cgtproxy publishes classification into
//! (`nft-set` on a rule): is the set there and of type `cgroupsv2`, which
//! ids does it hold, and adding or removing ours. Never the user's table
//! or set itself: nothing here creates, flushes or deletes them.

use crate::config::NftSetRef;
use crate::netlink::{NLM_F_DUMP, attrs};

use super::encode::{Elem, elements};
use super::error::NftError;
use super::handle::Nft;
use super::sys::*;

/// What the kernel says about a published set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetState {
    /// There, keyed by cgroup id.
    Ready,
    /// No such table or set (ENOENT).
    Missing,
    /// There, but not `type cgroupsv2`: (key type, key length).
    WrongType(u32, u32),
}

impl Nft {
    /// `nft list set FAMILY TABLE SET`: there, and of type cgroupsv2?
    pub fn foreign_set_state(&mut self, s: &NftSetRef) -> Result<SetState, NftError> {
        let req = self.get(NFT_MSG_GETSET, s.nfproto(), 0, |w| {
            w.str(NFTA_SET_TABLE, &s.table);
            w.str(NFTA_SET_NAME, &s.set);
        });
        let mut key = None;
        let what = format!("list set {} {} {}", s.family, s.table, s.set);
        let got = self.sock.dump(&req, &what, |_, payload| {
            let (mut ty, mut len) = (0, 0);
            for (t, v) in attrs(payload.get(4..).unwrap_or_default()) {
                let be = <[u8; 4]>::try_from(v).map(u32::from_be_bytes).unwrap_or(0);
                match t {
                    NFTA_SET_KEY_TYPE => ty = be,
                    NFTA_SET_KEY_LEN => len = be,
                    _ => {}
                }
            }
            key = Some((ty, len));
        });
        match got {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(SetState::Missing),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(match key {
                Some((TYPE_CGROUPV2, 8)) => SetState::Ready,
                Some((ty, len)) => SetState::WrongType(ty, len),
                None => SetState::Missing,
            }),
        }
    }

    /// The cgroup ids the set holds (`nft list set ...`).
    pub fn foreign_set_ids(&mut self, s: &NftSetRef) -> Result<Vec<u64>, NftError> {
        let req = self.get(NFT_MSG_GETSETELEM, s.nfproto(), NLM_F_DUMP, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, &s.table);
            w.str(NFTA_SET_ELEM_LIST_SET, &s.set);
        });
        let mut ids = Vec::new();
        let what = format!("list set {} {} {}", s.family, s.table, s.set);
        self.sock.dump(&req, &what, |_, payload| {
            for (_, list) in
                attrs(payload.get(4..).unwrap_or_default()).filter(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
            {
                for (_, elem) in attrs(list) {
                    let key = attrs(elem).find(|(t, _)| *t == NFTA_SET_ELEM_KEY).map(|(_, v)| v);
                    let value = key.and_then(|k| attrs(k).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|(_, v)| v));
                    if let Some(id) = value.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_ne_bytes) {
                        ids.push(id);
                    }
                }
            }
        })?;
        Ok(ids)
    }

    /// `add element FAMILY TABLE SET { IDS }` and `delete element ... { IDS }`
    /// in one batch of their own, so a missing set of the user's can never
    /// fail one of our table's batches.
    pub fn publish(&mut self, s: &NftSetRef, add: &[u64], del: &[u64]) -> Result<(), NftError> {
        let mut b = self.batch();
        b.family = s.nfproto();
        b.table = s.table.clone();
        let key = |id: &u64| Elem::Key(id.to_ne_bytes().to_vec());
        if !del.is_empty() {
            elements(&mut b, &s.set, None, false, del.iter().map(key));
        }
        if !add.is_empty() {
            elements(&mut b, &s.set, None, true, add.iter().map(key));
        }
        self.commit(b)
    }
}
