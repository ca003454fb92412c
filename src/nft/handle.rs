//! The connection to nf_tables ([`Nft`]) and the commands that change the
//! kernel's tables: committing batches, replacing or deleting our tables,
//! and the brouting probes. The read-only queries are in `query.rs`.

use crate::netlink::{MsgWriter, NLM_F_REQUEST, NetlinkError, NlSocket};
use crate::ruleset::Ruleset;

use super::batch::Batch;
use super::encode;
use super::error::{BATCH, NftError, explain};
use super::sys::*;

/// A connection to nf_tables in the current network namespace.
#[derive(Debug)]
pub struct Nft {
    /// Reached by the queries in `query.rs` too.
    pub(super) sock: NlSocket,
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
        if !rs.dynamic_sets.is_empty() {
            return self.apply_full_keeping(rs);
        }
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

    /// A request (a get or a dump, outside any batch) for `msg` in `family`,
    /// its attributes written by `body`.
    pub(super) fn get(&mut self, msg: u16, family: u8, flags: u16, body: impl FnOnce(&mut MsgWriter)) -> Vec<u8> {
        let seq = self.sock.next_seq();
        let mut w = MsgWriter::new();
        let m = w.begin((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags, seq);
        w.raw(&[family, 0, 0, 0]);
        body(&mut w);
        w.end(m);
        w.buf
    }
}

/// The name of this process's scratch tables (kernel probes).
pub fn probe_table() -> String {
    format!("cgtproxy-probe-{}", std::process::id())
}
