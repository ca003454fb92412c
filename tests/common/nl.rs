//! The kernel's nf_tables notifications (what `nft monitor` reads), read
//! and decoded with the project's own netlink layer: the clock of the
//! benches and the witness of the fail-closed tests.

use std::time::Duration;

use cgtproxy::netlink::{NlSocket, attrs, messages};
use cgtproxy::nft::sys::{
    NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, NFT_MSG_NEWSETELEM, NFTA_DATA_VALUE, NFTA_LIST_ELEM,
    NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS,
};

/// NFNLGRP_NFTABLES in enum nfnetlink_groups.
pub const NFNLGRP_NFTABLES: u32 = 7;
/// NFTA_GEN_PROC_PID: who committed a generation.
const NFTA_GEN_PROC_PID: u16 = 2;

/// A socket on the nf_tables notifications of the calling thread's
/// network namespace.
pub fn nft_monitor() -> NlSocket {
    NlSocket::monitor(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES]).expect("nf_tables monitor socket")
}

/// Block in poll(2) (no busy loop) until `sock` has something to read or
/// `timeout` passed; whether it has.
pub fn wait_readable(sock: &NlSocket, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// One nf_tables notification.
pub struct NftEvent<'a> {
    /// NFT_MSG_*.
    pub msg: u16,
    /// nfgenmsg's family (NFPROTO_*).
    pub family: u8,
    /// The attributes after nfgenmsg.
    pub attrs: &'a [u8],
}

/// The nf_tables messages in a datagram of [`nft_monitor`].
pub fn nft_events(datagram: &[u8]) -> Vec<NftEvent<'_>> {
    messages(datagram)
        .expect("a well-formed netlink datagram")
        .into_iter()
        .filter(|m| m.ty >> 8 == NFNL_SUBSYS_NFTABLES && m.payload.len() >= 4)
        .map(|m| NftEvent { msg: m.ty & 0xff, family: m.payload[0], attrs: &m.payload[4..] })
        .collect()
}

impl NftEvent<'_> {
    /// The 8-byte keys (cgroup ids) of a NEWSETELEM, empty for any other
    /// message: ELEMENTS > LIST_ELEM > KEY > DATA_VALUE.
    pub fn new_element_keys(&self) -> Vec<u64> {
        if self.msg != NFT_MSG_NEWSETELEM {
            return Vec::new();
        }
        fn nested(data: &[u8], ty: u16) -> impl Iterator<Item = &[u8]> {
            attrs(data).filter(move |(t, _)| *t == ty).map(|(_, v)| v)
        }
        nested(self.attrs, NFTA_SET_ELEM_LIST_ELEMENTS)
            .flat_map(|list| nested(list, NFTA_LIST_ELEM))
            .flat_map(|elem| nested(elem, NFTA_SET_ELEM_KEY))
            .flat_map(|key| nested(key, NFTA_DATA_VALUE))
            .filter_map(|v| Some(u64::from_ne_bytes(v.try_into().ok()?)))
            .collect()
    }

    /// The pid of the process whose commit a NEWGEN announces.
    pub fn committed_by(&self) -> Option<u32> {
        if self.msg != NFT_MSG_NEWGEN {
            return None;
        }
        attrs(self.attrs)
            .find(|(t, _)| *t == NFTA_GEN_PROC_PID)
            .and_then(|(_, v)| Some(u32::from_be_bytes(v.try_into().ok()?)))
    }
}
