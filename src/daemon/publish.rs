//! Classification published to the user's own sets (`nft-set` on a rule):
//! the ids of the cgroups each rule classifies are kept in the sets it
//! names, in batches of their own (a missing or broken set of the user's
//! never touches our table). The user's table and set are never created,
//! flushed or deleted; when the set is missing or of the wrong type, the
//! log and `status` say so, and it is filled when the kernel reports it
//! (re)created.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::config::NftSetRef;
use crate::nft::{Nft, NftError, SetState};

/// Desired contents, by set.
pub type Want = BTreeMap<NftSetRef, BTreeSet<u64>>;

#[derive(Default)]
pub struct Publisher {
    /// Its own request socket: its batches' notifications carry its port
    /// and are told from the user's changes.
    nft: Option<Nft>,
    /// What each set holds of ours, as far as we know.
    published: Want,
    /// Sets that are missing or wrong, with the sentence for log and status.
    problems: BTreeMap<NftSetRef, String>,
    /// Sets to read back and fill whole at the next [`Publisher::update`].
    stale: BTreeSet<NftSetRef>,
}

impl Publisher {
    /// Nothing published and nothing to publish.
    pub fn is_idle(&self) -> bool {
        self.published.is_empty() && self.stale.is_empty()
    }

    /// Some set is to be read back at the next update.
    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// The netlink port of its socket (None before the first use).
    pub fn port(&self) -> Option<u32> {
        self.nft.as_ref().and_then(|n| n.port_id().ok())
    }

    fn nft(&mut self) -> Result<&mut Nft, NftError> {
        if self.nft.is_none() {
            self.nft = Some(Nft::open()?);
        }
        Ok(self.nft.as_mut().expect("opened above"))
    }

    /// The kernel reported a change to `set` by someone else (a table
    /// reloaded, a set flushed or created): read it back at the next update.
    /// Returns whether `set` is one of ours.
    pub fn notice(&mut self, family: u8, table: &str, set: &str) -> bool {
        let Some(s) = self.published.keys().find(|s| s.nfproto() == family && s.table == table && s.set == set) else {
            return false;
        };
        self.stale.insert(s.clone());
        true
    }

    /// Read every set back and make it hold `want` (start, reload, rebuild).
    pub fn sync_all(&mut self, want: &Want, live: &BTreeSet<u64>) {
        self.stale.extend(want.keys().cloned());
        self.stale.extend(self.published.keys().cloned());
        self.update(want, live);
    }

    /// Send what changed since the last update: small add/delete batches,
    /// and a read-back of each stale set. `live`: ids of cgroups that exist
    /// (a read-back removes only those of ours that no longer belong; the
    /// user's own elements for other cgroups stay).
    pub fn update(&mut self, want: &Want, live: &BTreeSet<u64>) {
        if want.is_empty() && self.published.is_empty() {
            return;
        }
        let empty = BTreeSet::new();
        let sets: BTreeSet<NftSetRef> = want.keys().chain(self.published.keys()).cloned().collect();
        for s in sets {
            let target = want.get(&s).unwrap_or(&empty);
            let result = if self.stale.remove(&s) {
                self.read_back_and_fill(&s, target, live)
            } else {
                let have = self.published.get(&s).unwrap_or(&empty);
                let add: Vec<u64> = target.difference(have).copied().collect();
                let del: Vec<u64> = have.difference(target).copied().collect();
                if add.is_empty() && del.is_empty() {
                    continue;
                }
                self.nft().and_then(|n| n.publish(&s, &add, &del)).map(|()| true)
            };
            match result {
                Ok(true) => {
                    if self.problems.remove(&s).is_some() {
                        info!(set = %s, "set {s} is back: it holds the {} cgroups its rules classify", target.len());
                    }
                    self.published.insert(s.clone(), target.clone());
                }
                Ok(false) => {
                    self.published.insert(s.clone(), BTreeSet::new());
                }
                Err(e) => {
                    // Read back at the next update: the set may have been
                    // flushed or replaced under us.
                    self.problem(&s, format!("cannot update it: {e}"));
                    self.stale.insert(s.clone());
                }
            }
            if !want.contains_key(&s) {
                self.published.remove(&s);
                self.problems.remove(&s);
            }
        }
    }

    /// Ok(false): the set is missing or of the wrong type (said once).
    fn read_back_and_fill(
        &mut self,
        s: &NftSetRef,
        target: &BTreeSet<u64>,
        live: &BTreeSet<u64>,
    ) -> Result<bool, NftError> {
        let nft = self.nft()?;
        match nft.foreign_set_state(s)? {
            SetState::Missing => {
                self.problem(
                    s,
                    format!(
                        "MISSING: no table {} {} with a set {} (create it: `nft add set {} {} {} {{ type cgroupsv2; }}`)",
                        s.family, s.table, s.set, s.family, s.table, s.set
                    ),
                );
                return Ok(false);
            }
            SetState::WrongType(ty, len) => {
                self.problem(s, format!("WRONG TYPE: key type {ty}, {len} bytes; it must be `type cgroupsv2`"));
                return Ok(false);
            }
            SetState::Ready => {}
        }
        let present: BTreeSet<u64> = nft.foreign_set_ids(s)?.into_iter().collect();
        let add: Vec<u64> = target.difference(&present).copied().collect();
        let del: Vec<u64> = present.intersection(live).filter(|id| !target.contains(id)).copied().collect();
        if !add.is_empty() || !del.is_empty() {
            nft.publish(s, &add, &del)?;
        }
        Ok(true)
    }

    fn problem(&mut self, s: &NftSetRef, what: String) {
        if self.problems.get(s) != Some(&what) {
            warn!(set = %s, "published set {s}: {what}");
            self.problems.insert(s.clone(), what);
        }
    }

    /// One line per published set, for `status`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .published
            .iter()
            .filter(|(s, _)| !self.problems.contains_key(*s))
            .map(|(s, ids)| format!("{s}: {} cgroups", ids.len()))
            .collect();
        lines.extend(self.problems.iter().map(|(s, p)| format!("{s}: {p}")));
        lines
    }
}
