//! Programming `table inet cgtproxy` over nf_tables netlink.
//!
//! Every change is one batch, so the kernel applies all of it or none of it.

mod batch;
#[cfg(test)]
mod decode_tests;
pub mod encode;
pub mod expr;
pub mod sys;

pub use batch::Batch;

use crate::names::TABLE;
use crate::netlink::{NLM_F_REQUEST, NetlinkError, NlSocket};
use crate::ruleset::Ruleset;
use sys::*;

/// `cgroup-class` by cgroup id: the verdict and, with counters, (packets, bytes).
pub type CountedMap = std::collections::BTreeMap<u64, (crate::ruleset::Verdict, Option<(u64, u64)>)>;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open an nf_tables netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("nftables: {0}")]
    Netlink(#[from] NetlinkError),
    #[error(
        "nftables: nf_tables is not available in this kernel (the nf_tables module is not built or cannot be loaded)"
    )]
    Unavailable,
}

/// What the kernel refused, with the usual cause for the errors whose
/// cause is not in the kernel's own message.
fn explain(e: NetlinkError) -> NftError {
    match e {
        NetlinkError::Kernel { errno: libc::EOPNOTSUPP, ref what, .. } if what == BATCH => NftError::Unavailable,
        NetlinkError::Kernel { what, errno: libc::ENOENT, message }
            if what.starts_with("add rule") || what.starts_with("insert rule") =>
        {
            let modules: Vec<&str> = [
                ("socket cgroupv2", "nft_socket"),
                ("tproxy", "nft_tproxy"),
                ("dnat", "nft_nat"),
                ("ct ", "nft_ct"),
                ("@", "nft_lookup/nft_set_hash/nft_set_rbtree"),
            ]
            .iter()
            .filter(|(k, _)| what.contains(k))
            .map(|(_, m)| *m)
            .collect();
            let message = if modules.is_empty() {
                message
            } else {
                format!(
                    "{message}: an expression it uses is not available; is kernel module {} present?",
                    modules.join(", ")
                )
            };
            NftError::Netlink(NetlinkError::Kernel { what, errno: libc::ENOENT, message })
        }
        e => NftError::Netlink(e),
    }
}

/// How errors addressed to a batch's BEGIN message name it.
const BATCH: &str = "nftables batch";

/// A connection to nf_tables in the current network namespace.
#[derive(Debug)]
pub struct Nft {
    sock: NlSocket,
}

impl Nft {
    pub fn open() -> Result<Self, NftError> {
        Ok(Nft { sock: NlSocket::open(NETLINK_NETFILTER).map_err(NftError::Open)? })
    }

    /// The socket's netlink port id: notifications of our commits carry it.
    pub fn port_id(&self) -> std::io::Result<u32> {
        self.sock.port_id()
    }

    /// A new batch numbered after this socket's last request.
    pub fn batch(&mut self) -> Batch {
        Batch::new(self.sock.next_seq())
    }

    /// Send a batch and wait for the kernel's verdict on it.
    pub fn commit(&mut self, batch: Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let begin = batch.begin_seq();
        let overflow = batch.w.check();
        let (buf, acks, last) = batch.finish();
        self.sock.set_seq(last);
        if let Err((ty, len)) = overflow {
            return Err(NetlinkError::TooLong { what: BATCH.into(), ty, len }.into());
        }
        self.sock.transact(&buf, &acks, &[(begin, BATCH.to_owned())]).map_err(explain)
    }

    /// Replace the whole table with `rs`, atomically.
    pub fn apply_full(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        let mut b = self.batch();
        encode::full(&mut b, rs);
        self.commit(b)
    }

    /// `delete table inet cgtproxy`; Ok(false) when there was none.
    pub fn delete_table(&mut self) -> Result<bool, NftError> {
        let mut b = self.batch();
        encode::table(&mut b, NFT_MSG_DELTABLE, 0, "delete table inet cgtproxy");
        match self.commit(b) {
            Ok(()) => Ok(true),
            Err(NftError::Netlink(e)) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A batch for a bridge-family table, `table` (ours unless given).
    fn bridge_batch(&mut self, table: Option<&str>) -> Batch {
        let mut b = self.batch();
        b.family = NFPROTO_BRIDGE;
        if let Some(t) = table {
            b.table = t.to_owned();
        }
        b
    }

    /// `delete table bridge cgtproxy` (gateway brouting); Ok(false) when
    /// there was none, or the kernel has no nf_tables bridge family.
    pub fn delete_bridge_table(&mut self) -> Result<bool, NftError> {
        // Asked first: a batch the kernel refuses (ENOENT, the usual case
        // without gateway entries) ends in an abort that waits for an RCU
        // grace period, 10-12 ms here, on every start and reload; the
        // question costs one round trip.
        match self.bridge_table_exists() {
            Ok(false) => return Ok(false),
            Ok(true) => {}
            Err(NftError::Netlink(e)) if matches!(e.errno(), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let mut b = self.bridge_batch(None);
        encode::table(&mut b, NFT_MSG_DELTABLE, 0, "delete table bridge cgtproxy");
        match self.commit(b) {
            Ok(()) => Ok(true),
            Err(NftError::Netlink(e))
                if matches!(e.errno(), Some(libc::ENOENT | libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Can the kernel broute (nft_meta_bridge: `meta ibrname`, `meta broute
    /// set 1`)? Probed with a scratch bridge table created and deleted in
    /// one batch, so nothing stays.
    pub fn can_broute(&mut self) -> bool {
        let mut b = self.bridge_batch(Some(&probe_table()));
        encode::probe_broute(&mut b, true);
        encode::table(&mut b, NFT_MSG_DELTABLE, 0, "delete scratch bridge table");
        self.commit(b).is_ok()
    }

    /// Run `f` while a scratch bridge table with a `meta broute set 1` rule
    /// exists (in a chain no packet reaches), named as given to `f`; the
    /// table is deleted afterwards.
    pub fn with_broute_probe<T>(&mut self, f: impl FnOnce(&str) -> T) -> Result<T, NftError> {
        let name = probe_table();
        let mut b = self.bridge_batch(Some(&name));
        encode::probe_broute(&mut b, false);
        self.commit(b)?;
        let out = f(&name);
        let mut b = self.bridge_batch(Some(&name));
        encode::table(&mut b, NFT_MSG_DELTABLE, 0, "delete scratch bridge table");
        self.commit(b).map(|()| out)
    }

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
        let mut found = false;
        match self.sock.dump(&req, what, |_, _| found = true) {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Nft {
    fn get(&mut self, msg: u16, family: u8, flags: u16, body: impl FnOnce(&mut crate::netlink::MsgWriter)) -> Vec<u8> {
        let seq = self.sock.next_seq();
        let mut w = crate::netlink::MsgWriter::new();
        let m = w.begin((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags, seq);
        w.raw(&[family, 0, 0, 0]);
        body(&mut w);
        w.end(m);
        w.buf
    }

    /// The ruleset generation: it changes with every commit by anyone.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let req = self.get(NFT_MSG_GETGEN, NFPROTO_UNSPEC, 0, |_| {});
        let mut gen_id = 0;
        self.sock.dump(&req, "get generation", |_, payload| {
            for (ty, v) in crate::netlink::attrs(payload.get(4..).unwrap_or_default()) {
                if let (NFTA_GEN_ID, Ok(b)) = (ty, <[u8; 4]>::try_from(v)) {
                    gen_id = u32::from_be_bytes(b);
                }
            }
        })?;
        Ok(gen_id)
    }

    /// Handles of the `socket cgroupv2 level N` rules in `classify`, by N.
    pub fn level_handles(&mut self) -> Result<std::collections::BTreeMap<u32, u64>, NftError> {
        let req = self.get(NFT_MSG_GETRULE, NFPROTO_INET, crate::netlink::NLM_F_DUMP, |w| {
            w.str(NFTA_RULE_TABLE, TABLE);
            w.str(NFTA_RULE_CHAIN, crate::names::CHAIN_CLASSIFY);
        });
        let mut out = std::collections::BTreeMap::new();
        self.sock.dump(&req, "list chain inet cgtproxy classify", |_, payload| {
            // A level may have two rules (strict mode); new levels go
            // before the first.
            if let Some((l, h)) = level_rule(payload) {
                out.entry(l).or_insert(h);
            }
        })?;
        Ok(out)
    }
}

impl Nft {
    /// The elements of `cgroup-class` as the kernel holds them.
    pub fn cgroup_map(&mut self) -> Result<std::collections::BTreeMap<u64, crate::ruleset::Verdict>, NftError> {
        Ok(self.cgroup_map_counted()?.into_iter().map(|(id, (v, _))| (id, v)).collect())
    }

    /// Like [`Nft::cgroup_map`], with each element's (packets, bytes) when
    /// the map has counters.
    pub fn cgroup_map_counted(&mut self) -> Result<CountedMap, NftError> {
        use crate::netlink::attrs;
        let req = self.get(NFT_MSG_GETSETELEM, NFPROTO_INET, crate::netlink::NLM_F_DUMP, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, crate::names::MAP_CGROUP);
        });
        // The first NFTA_DATA_VALUE inside a nested data attribute.
        fn value(nested: &[u8]) -> Option<&[u8]> {
            attrs(nested).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|(_, v)| v)
        }
        let mut out = std::collections::BTreeMap::new();
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
                        out.insert(k, (crate::ruleset::Verdict::from_class(c), counter));
                    }
                }
            }
        })?;
        Ok(out)
    }
}

impl Nft {
    /// Is `id` in `cgroup-class` (`nft get element ...`)? One small request,
    /// cheap enough to poll.
    pub fn has_cgroup(&mut self, id: u64) -> Result<bool, NftError> {
        let req = self.get(NFT_MSG_GETSETELEM, NFPROTO_INET, 0, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            w.str(NFTA_SET_ELEM_LIST_SET, crate::names::MAP_CGROUP);
            let list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            encode::Elem::Key(id.to_ne_bytes().to_vec()).encode(w);
            w.nest_end(list);
        });
        let mut found = false;
        match self.sock.dump(&req, "get element inet cgtproxy cgroup-class", |_, _| found = true) {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Nft {
    /// Each rule of `CHAIN` in `table FAMILY cgtproxy`, in order, with the
    /// (packets, bytes) of its `counter` if it has one. Empty when the chain
    /// does not exist.
    pub fn rule_counters(&mut self, family: u8, chain: &str) -> Result<Vec<Option<(u64, u64)>>, NftError> {
        use crate::netlink::attrs;
        let req = self.get(NFT_MSG_GETRULE, family, crate::netlink::NLM_F_DUMP, |w| {
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

/// (level, handle) of a `socket cgroupv2 level N` rule in `classify`, from
/// an NFT_MSG_NEWRULE payload (nfgenmsg and attributes): a dump reply or a
/// notification.
pub fn level_rule(payload: &[u8]) -> Option<(u32, u64)> {
    use crate::netlink::attrs;
    let (mut handle, mut level, mut chain_ok) = (None, None, false);
    for (ty, v) in attrs(payload.get(4..)?) {
        match ty {
            NFTA_RULE_CHAIN => chain_ok = v.strip_suffix(b"\0") == Some(crate::names::CHAIN_CLASSIFY.as_bytes()),
            NFTA_RULE_HANDLE => handle = <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes),
            NFTA_RULE_EXPRESSIONS => {
                for (_, elem) in attrs(v) {
                    let mut is_socket = false;
                    for (ety, ev) in attrs(elem) {
                        if ety == NFTA_EXPR_NAME {
                            is_socket = ev == b"socket\0";
                        } else if ety == NFTA_EXPR_DATA && is_socket {
                            for (sty, sv) in attrs(ev) {
                                if sty == NFTA_SOCKET_LEVEL {
                                    level = <[u8; 4]>::try_from(sv).ok().map(u32::from_be_bytes);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if chain_ok { Some((level?, handle?)) } else { None }
}

/// The handle of a rule message (NFTA_RULE_HANDLE).
pub fn rule_handle(payload: &[u8]) -> Option<u64> {
    crate::netlink::attrs(payload.get(4..)?)
        .find(|(t, _)| *t == NFTA_RULE_HANDLE)
        .and_then(|(_, v)| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
}

/// (packets, bytes) of a `counter` expression (NFTA_EXPR_NAME + DATA).
fn parse_counter(expr: &[u8]) -> Option<(u64, u64)> {
    use crate::netlink::attrs;
    let mut is_counter = false;
    let mut out = None;
    for (ty, v) in attrs(expr) {
        match ty {
            NFTA_EXPR_NAME => is_counter = v == b"counter\0",
            NFTA_EXPR_DATA if is_counter => {
                let (mut packets, mut bytes) = (0, 0);
                for (cty, cv) in attrs(v) {
                    let n = <[u8; 8]>::try_from(cv).map(u64::from_be_bytes).unwrap_or(0);
                    match cty {
                        NFTA_COUNTER_PACKETS => packets = n,
                        NFTA_COUNTER_BYTES => bytes = n,
                        _ => {}
                    }
                }
                out = Some((packets, bytes));
            }
            _ => {}
        }
    }
    out
}

/// The name of this process's scratch tables (kernel probes).
pub fn probe_table() -> String {
    format!("cgtproxy-probe-{}", std::process::id())
}
