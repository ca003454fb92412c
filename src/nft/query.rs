//! What the kernel holds, read back: whether our tables exist, the ruleset
//! generation, the handles of the level rules, the `cgroup-class` map and
//! rule counters. Each is one get or dump request on the [`Nft`] socket;
//! the attributes of the replies are read here, rule messages in `parse.rs`.

use std::collections::BTreeMap;

use crate::names::{CHAIN_CLASSIFY, MAP_CGROUP, TABLE};
use crate::netlink::{NLM_F_DUMP, attrs};
use crate::ruleset::Verdict;

use super::encode::Elem;
use super::error::NftError;
use super::handle::Nft;
use super::parse::{level_rule, parse_counter};
use super::sys::*;

/// `cgroup-class` by cgroup id: the verdict and, with counters, (packets, bytes).
pub type CountedMap = BTreeMap<u64, (Verdict, Option<(u64, u64)>)>;

impl Nft {
    /// Does `table inet cgtproxy` exist?
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        self.exists(NFPROTO_INET, "list table inet cgtproxy")
    }

    /// Whether `table bridge cgtproxy` exists.
    pub fn bridge_table_exists(&mut self) -> Result<bool, NftError> {
        self.exists(NFPROTO_BRIDGE, "list table bridge cgtproxy")
    }

    /// `nft list table FAMILY cgtproxy` succeeds.
    fn exists(&mut self, family: u8, what: &str) -> Result<bool, NftError> {
        let req = self.get(NFT_MSG_GETTABLE, family, 0, |w| w.str(NFTA_TABLE_NAME, TABLE));
        self.found(&req, what)
    }

    /// Whether the get request `req` (`what`) finds anything: the kernel
    /// answers ENOENT for an object that is not there.
    fn found(&mut self, req: &[u8], what: &str) -> Result<bool, NftError> {
        let mut found = false;
        match self.sock.dump(req, what, |_, _| found = true) {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The ruleset generation: it changes with every commit by anyone.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let req = self.get(NFT_MSG_GETGEN, NFPROTO_UNSPEC, 0, |_| {});
        let mut gen_id = 0;
        self.sock.dump(&req, "get generation", |_, payload| {
            for (ty, v) in attrs(payload.get(4..).unwrap_or_default()) {
                if let (NFTA_GEN_ID, Ok(b)) = (ty, <[u8; 4]>::try_from(v)) {
                    gen_id = u32::from_be_bytes(b);
                }
            }
        })?;
        Ok(gen_id)
    }

    /// Handles of the `socket cgroupv2 level N` rules in `classify`, by N.
    pub fn level_handles(&mut self) -> Result<BTreeMap<u32, u64>, NftError> {
        let req = self.get(NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, |w| {
            w.str(NFTA_RULE_TABLE, TABLE);
            w.str(NFTA_RULE_CHAIN, CHAIN_CLASSIFY);
        });
        let mut out = BTreeMap::new();
        self.sock.dump(&req, "list chain inet cgtproxy classify", |_, payload| {
            // A level may have two rules (strict mode); new levels go
            // before the first.
            if let Some((l, h)) = level_rule(payload) {
                out.entry(l).or_insert(h);
            }
        })?;
        Ok(out)
    }

    /// The elements of `cgroup-class` as the kernel holds them.
    pub fn cgroup_map(&mut self) -> Result<BTreeMap<u64, Verdict>, NftError> {
        Ok(self.cgroup_map_counted()?.into_iter().map(|(id, (v, _))| (id, v)).collect())
    }

    /// Like [`Nft::cgroup_map`], with each element's (packets, bytes) when
    /// the map has counters.
    pub fn cgroup_map_counted(&mut self) -> Result<CountedMap, NftError> {
        let req = self.get(NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, MAP_CGROUP);
        });
        // The first NFTA_DATA_VALUE inside a nested data attribute.
        fn value(nested: &[u8]) -> Option<&[u8]> {
            attrs(nested).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|(_, v)| v)
        }
        let mut out = BTreeMap::new();
        self.sock.dump(&req, "list map inet cgtproxy cgroup-class", |_, payload| {
            for (_, list) in
                attrs(payload.get(4..).unwrap_or_default()).filter(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
            {
                for (_, elem) in attrs(list) {
                    let (mut key, mut class, mut counter) = (None, None, None);
                    for (ety, ev) in attrs(elem) {
                        match ety {
                            NFTA_SET_ELEM_KEY => {
                                key = value(ev).and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_ne_bytes)
                            }
                            NFTA_SET_ELEM_DATA => {
                                class = value(ev).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(u32::from_ne_bytes)
                            }
                            NFTA_SET_ELEM_EXPR => counter = parse_counter(ev),
                            NFTA_SET_ELEM_EXPRESSIONS => counter = attrs(ev).find_map(|(_, x)| parse_counter(x)),
                            _ => {}
                        }
                    }
                    if let (Some(k), Some(c)) = (key, class) {
                        out.insert(k, (Verdict::from_class(c), counter));
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// Is `id` in `cgroup-class` (`nft get element ...`)? One small request,
    /// cheap enough to poll.
    pub fn has_cgroup(&mut self, id: u64) -> Result<bool, NftError> {
        let req = self.get(NFT_MSG_GETSETELEM, NFPROTO_INET, 0, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, MAP_CGROUP);
            let list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            Elem::Key(id.to_ne_bytes().to_vec()).encode(w);
            w.nest_end(list);
        });
        self.found(&req, "get element inet cgtproxy cgroup-class")
    }

    /// Each rule of `CHAIN` in `table FAMILY cgtproxy`, in order, with the
    /// (packets, bytes) of its `counter` if it has one. Empty when the chain
    /// does not exist.
    pub fn rule_counters(&mut self, family: u8, chain: &str) -> Result<Vec<Option<(u64, u64)>>, NftError> {
        let req = self.get(NFT_MSG_GETRULE, family, NLM_F_DUMP, |w| {
            w.str(NFTA_RULE_TABLE, TABLE);
            w.str(NFTA_RULE_CHAIN, chain);
        });
        let mut out = Vec::new();
        let what = format!("list chain {} cgtproxy {chain}", if family == NFPROTO_BRIDGE { "bridge" } else { "inet" });
        let result = self.sock.dump(&req, &what, |_, payload| {
            let mut in_chain = false;
            let mut counter = None;
            for (ty, v) in attrs(payload.get(4..).unwrap_or_default()) {
                match ty {
                    NFTA_RULE_CHAIN => in_chain = v.strip_suffix(b"\0") == Some(chain.as_bytes()),
                    NFTA_RULE_EXPRESSIONS => counter = attrs(v).find_map(|(_, x)| parse_counter(x)),
                    _ => {}
                }
            }
            if in_chain {
                out.push(counter);
            }
        });
        match result {
            Ok(()) => Ok(out),
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EAFNOSUPPORT)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}
