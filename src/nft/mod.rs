//! Programming `table inet cgtproxy` over nf_tables netlink.
//!
//! Every change is one batch, so the kernel applies all of it or none of it.

mod batch;
pub mod encode;
pub mod expr;
pub mod sys;

pub use batch::Batch;

use crate::netlink::{NLM_F_ACK, NLM_F_REQUEST, NetlinkError, NlSocket};
use crate::ruleset::{Ruleset, TABLE};
use sys::*;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open an nf_tables netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("nftables: {0}")]
    Netlink(#[from] NetlinkError),
}

/// A connection to nf_tables in the current network namespace.
#[derive(Debug)]
pub struct Nft {
    sock: NlSocket,
}

impl Nft {
    pub fn open() -> Result<Self, NftError> {
        Ok(Nft { sock: NlSocket::open(NETLINK_NETFILTER).map_err(NftError::Open)? })
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
        let (buf, acks, last) = batch.finish();
        self.sock.set_seq(last);
        self.sock.transact(&buf, &acks)?;
        Ok(())
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

    /// Does `table inet cgtproxy` exist?
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        let seq = self.sock.next_seq();
        let mut w = crate::netlink::MsgWriter::new();
        let m = w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, seq);
        w.raw(&[NFPROTO_INET, 0, 0, 0]);
        w.str(NFTA_TABLE_NAME, TABLE);
        w.end(m);
        let mut found = false;
        match self.sock.dump(&w.buf, "list table inet cgtproxy", |_, _| found = true) {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
