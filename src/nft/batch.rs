//! An nfnetlink batch: BEGIN, messages, END, committed by the kernel as one
//! transaction. Every message asks for an ack and carries a description (its
//! `nft` command) so an error names the object the kernel refused.

use crate::netlink::{MsgWriter, NLM_F_ACK, NLM_F_REQUEST};

use super::sys::*;

#[derive(Debug)]
pub struct Batch {
    /// The table the messages address (a scratch table for `check`).
    pub table: String,
    /// The family of the messages' table: inet, or bridge for the gateway's
    /// brouting table.
    pub family: u8,
    pub(crate) w: MsgWriter,
    pub(crate) acks: Vec<(u32, String)>,
    seq: u32,
    /// The BEGIN message's sequence number: the kernel addresses errors
    /// about the batch as a whole (EPERM, nf_tables missing) to it.
    begin_seq: u32,
    next_set_id: u32,
}

impl Batch {
    /// Start a batch whose messages get sequence numbers after `seq`.
    pub fn new(seq: u32) -> Self {
        let mut b = Batch {
            table: crate::names::TABLE.to_owned(),
            family: NFPROTO_INET,
            w: MsgWriter::new(),
            acks: Vec::new(),
            seq,
            begin_seq: seq.wrapping_add(1),
            next_set_id: 0,
        };
        b.control(NFNL_MSG_BATCH_BEGIN);
        b
    }

    fn control(&mut self, ty: u16) {
        self.seq = self.seq.wrapping_add(1);
        let start = self.w.begin(ty, NLM_F_REQUEST, self.seq);
        // nfgenmsg: family, version, res_id = the subsystem (big-endian).
        let res = NFNL_SUBSYS_NFTABLES.to_be_bytes();
        self.w.raw(&[NFPROTO_UNSPEC, 0, res[0], res[1]]);
        self.w.end(start);
    }

    /// Start an nf_tables message for the batch's family; `what` is the `nft`
    /// command it equals, used in error messages.
    pub fn begin(&mut self, msg: u16, flags: u16, what: impl Into<String>) -> usize {
        self.seq = self.seq.wrapping_add(1);
        let start = self.w.begin((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq);
        self.w.raw(&[self.family, 0, 0, 0]);
        self.acks.push((self.seq, what.into()));
        start
    }

    /// The word `nft` uses for the batch's family, for messages.
    pub fn family_word(&self) -> &'static str {
        match self.family {
            NFPROTO_BRIDGE => "bridge",
            NFPROTO_IPV4 => "ip",
            NFPROTO_IPV6 => "ip6",
            NFPROTO_ARP => "arp",
            NFPROTO_NETDEV => "netdev",
            _ => "inet",
        }
    }

    pub fn end(&mut self, start: usize) {
        self.w.end(start);
    }

    /// A set id, unique in this batch, to refer to a set created in it.
    pub fn set_id(&mut self) -> u32 {
        self.next_set_id += 1;
        self.next_set_id
    }

    pub fn begin_seq(&self) -> u32 {
        self.begin_seq
    }

    /// Number of messages besides BEGIN and END.
    pub fn len(&self) -> usize {
        self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// Close the batch; returns the bytes, the acks to wait for and the last
    /// sequence number used.
    pub fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>, u32) {
        self.control(NFNL_MSG_BATCH_END);
        (self.w.buf, self.acks, self.seq)
    }
}
