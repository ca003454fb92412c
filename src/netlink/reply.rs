//! What the kernel's replies mean, datagram by datagram, without I/O: the
//! acks a batch waits for ([`Acks`]) and the messages of a dump
//! ([`Dump`]). `NlSocket` feeds them what it receives; the unit
//! tests feed them crafted replies.

use std::collections::HashMap;

use super::error::{NetlinkError, kernel_error};
use super::msg::{NLM_F_DUMP_INTR, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, messages, parse_error};

/// The acks a request or batch waits for.
#[derive(Debug)]
pub struct Acks<'a> {
    /// Sequence number -> the request it answers (its `nft`/`ip` command).
    pending: HashMap<u32, &'a str>,
    /// Messages whose error ends the wait at once: a batch's BEGIN (EPERM,
    /// nf_tables missing) is refused before any other message is read, so
    /// no other reply will come.
    fatal: &'a [(u32, String)],
    first_error: Option<NetlinkError>,
}

impl<'a> Acks<'a> {
    pub fn new(acks: &'a [(u32, String)], fatal: &'a [(u32, String)]) -> Self {
        Acks { pending: acks.iter().map(|(s, w)| (*s, w.as_str())).collect(), fatal, first_error: None }
    }

    /// Take one datagram; true once nothing more is to be waited for
    /// (every ack came, or the kernel refused the batch).
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, NetlinkError> {
        for msg in messages(data)? {
            if msg.ty != NLMSG_ERROR {
                continue;
            }
            let (errno, ext) = parse_error(&msg)?;
            let what = match self.pending.remove(&msg.seq) {
                Some(what) => what,
                None => match self.fatal.iter().find(|(s, _)| *s == msg.seq) {
                    Some((_, what)) if errno != 0 => {
                        self.pending.clear();
                        what.as_str()
                    }
                    // A stale reply to an earlier request.
                    _ => continue,
                },
            };
            if errno != 0 && self.first_error.is_none() {
                self.first_error = Some(kernel_error(what, errno, ext));
            }
        }
        // After an error the kernel rejected the batch as a whole; remaining
        // acks, if any, only repeat that.
        Ok(self.pending.is_empty() || self.first_error.is_some())
    }

    /// A request still waiting, for a "no reply" message.
    pub fn waiting_for(&self) -> &str {
        self.pending.values().next().copied().unwrap_or("request")
    }

    /// The first error, naming its request, or Ok.
    pub fn finish(self) -> Result<(), NetlinkError> {
        self.first_error.map_or(Ok(()), Err)
    }

    /// The first error seen so far, taken (for a wait cut short).
    pub fn take_error(&mut self) -> Option<NetlinkError> {
        self.first_error.take()
    }
}

/// The replies of one dump request, numbered `seq`.
#[derive(Debug)]
pub struct Dump<'a> {
    seq: u32,
    what: &'a str,
    datagrams: Vec<Vec<u8>>,
    /// The kernel marked a message NLM_F_DUMP_INTR: the data changed while
    /// it was read, so what came is not a consistent picture.
    pub interrupted: bool,
}

impl<'a> Dump<'a> {
    pub fn new(seq: u32, what: &'a str) -> Self {
        Dump { seq, what, datagrams: Vec::new(), interrupted: false }
    }

    /// Take one datagram; true at the end of the dump. Messages with
    /// another sequence number (replies to earlier requests) are ignored;
    /// an error, in NLMSG_ERROR or carried by NLMSG_DONE (a dump that failed
    /// part way), is returned.
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, NetlinkError> {
        let mut done = false;
        for msg in messages(data)? {
            if msg.seq != self.seq {
                continue;
            }
            self.interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
            match msg.ty {
                NLMSG_DONE => {
                    let err = msg.payload.get(..4).map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                    if let Some(err) = err.filter(|e| *e < 0) {
                        return Err(kernel_error(self.what, -err, None));
                    }
                    done = true;
                }
                NLMSG_ERROR => {
                    let (errno, ext) = parse_error(&msg)?;
                    if errno != 0 {
                        return Err(kernel_error(self.what, errno, ext));
                    }
                    done = true;
                }
                // A single answer (a `get` without NLM_F_DUMP) ends there.
                _ => done |= msg.flags & NLM_F_MULTI == 0,
            }
        }
        self.datagrams.push(data.to_vec());
        Ok(done)
    }

    /// Call `each` with the type and payload of every data message of this
    /// dump, in order.
    pub fn each(&self, mut each: impl FnMut(u16, &[u8])) -> Result<(), NetlinkError> {
        for d in &self.datagrams {
            for m in messages(d)? {
                if m.seq == self.seq && m.ty != NLMSG_DONE && m.ty != NLMSG_ERROR {
                    each(m.ty, m.payload);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::NLMSG_HDRLEN;

    /// One netlink message as the kernel sends it.
    fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::with_capacity(len + 3);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    /// NLMSG_ERROR for request `seq` with `errno` (0: an ack), capped (only
    /// the request's header echoed, as with NETLINK_CAP_ACK).
    fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut p = (-errno).to_ne_bytes().to_vec();
        p.extend_from_slice(&msg(0, 0, seq, &[])[..NLMSG_HDRLEN]);
        msg(NLMSG_ERROR, 0x100, seq, &p)
    }

    fn done(seq: u32, err: i32) -> Vec<u8> {
        msg(NLMSG_DONE, NLM_F_MULTI, seq, &err.to_ne_bytes())
    }

    fn acks(seqs: &[u32]) -> Vec<(u32, String)> {
        seqs.iter().map(|s| (*s, format!("request {s}"))).collect()
    }

    #[test]
    fn all_acks_end_the_wait() {
        let (want, fatal) = (acks(&[11, 12]), acks(&[10]));
        let mut a = Acks::new(&want, &fatal);
        assert!(!a.feed(&error(11, 0)).unwrap());
        assert!(a.feed(&error(12, 0)).unwrap());
        a.finish().unwrap();
    }

    #[test]
    fn eperm_on_the_batch_begin_ends_the_wait_at_once_and_names_the_capability() {
        // The kernel refuses the whole batch at BEGIN (seq 10) and sends
        // nothing for the messages after it.
        let (want, fatal) = (acks(&[11, 12]), acks(&[10]));
        let mut a = Acks::new(&want, &fatal);
        assert!(a.feed(&error(10, libc::EPERM)).unwrap());
        let e = a.finish().unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().contains("request 10") && e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn an_ack_for_the_begin_or_a_stale_request_is_not_ours() {
        let (want, fatal) = (acks(&[11]), acks(&[10]));
        let mut a = Acks::new(&want, &fatal);
        let mut d = error(10, 0);
        d.extend(error(3, libc::ENOENT)); // an earlier request's late error
        assert!(!a.feed(&d).unwrap());
        assert!(a.feed(&error(11, 0)).unwrap());
        a.finish().unwrap();
    }

    #[test]
    fn the_first_error_names_its_request() {
        let (want, fatal) = (acks(&[11, 12, 13]), acks(&[10]));
        let mut a = Acks::new(&want, &fatal);
        let mut d = error(11, 0);
        d.extend(error(12, libc::ENOENT));
        d.extend(error(13, libc::EINVAL));
        assert!(a.feed(&d).unwrap());
        let e = a.finish().unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(e.to_string().starts_with("request 12:"), "{e}");
    }

    #[test]
    fn a_truncated_reply_is_malformed() {
        let mut d = error(11, 0);
        d.truncate(d.len() - 8);
        let want = acks(&[11]);
        assert!(matches!(Acks::new(&want, &[]).feed(&d), Err(NetlinkError::Malformed(_))));
    }

    #[test]
    fn a_dump_collects_its_messages_until_done_and_skips_stale_ones() {
        let mut dump = Dump::new(7, "list rules");
        let mut d = msg(20, NLM_F_MULTI, 7, b"one\0");
        d.extend(msg(20, NLM_F_MULTI, 6, b"stale\0")); // an earlier request's reply
        assert!(!dump.feed(&d).unwrap());
        // A stale ack from an earlier request must not end the dump early.
        assert!(!dump.feed(&error(6, 0)).unwrap());
        let mut d = msg(20, NLM_F_MULTI, 7, b"two\0");
        d.extend(done(7, 0));
        assert!(dump.feed(&d).unwrap());
        assert!(!dump.interrupted);
        let mut seen = Vec::new();
        dump.each(|ty, p| seen.push((ty, p.to_vec()))).unwrap();
        assert_eq!(seen, vec![(20, b"one\0".to_vec()), (20, b"two\0".to_vec())]);
    }

    #[test]
    fn an_error_in_done_fails_the_dump() {
        let mut dump = Dump::new(7, "list map inet cgtproxy cgroup-class");
        assert!(!dump.feed(&msg(20, NLM_F_MULTI, 7, b"x\0")).unwrap());
        let e = dump.feed(&done(7, -libc::EINTR)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINTR));
        assert!(e.to_string().starts_with("list map inet cgtproxy cgroup-class:"), "{e}");
    }

    #[test]
    fn an_error_reply_fails_the_dump_and_names_it() {
        let mut dump = Dump::new(7, "list table inet cgtproxy");
        let e = dump.feed(&error(7, libc::ENOENT)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(e.to_string().starts_with("list table inet cgtproxy:"), "{e}");
    }

    #[test]
    fn an_interrupted_dump_is_marked() {
        let mut dump = Dump::new(7, "list rules");
        let mut d = msg(20, NLM_F_MULTI | NLM_F_DUMP_INTR, 7, b"one\0");
        d.extend(done(7, 0));
        assert!(dump.feed(&d).unwrap());
        assert!(dump.interrupted);
    }

    #[test]
    fn a_single_answer_ends_a_get() {
        let mut dump = Dump::new(9, "get generation");
        assert!(dump.feed(&msg(20, 0, 9, b"gen\0")).unwrap());
    }
}
