//! The netlink message header: its constants and flags, splitting a
//! datagram into messages, and reading an NLMSG_ERROR (an ack or a refusal).
//! Shared by the socket, the reply parsers and every protocol built on them,
//! so it sits below all of them.

use super::attrs::attrs;
use super::error::NetlinkError;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
/// Set on dump replies when the data changed while the dump ran.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// Set by the kernel on error messages that carry extended-ack TLVs.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Set by the kernel on error messages that echo only the request's header
/// (NETLINK_CAP_ACK), not the whole request.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One message of a reply.
#[derive(Debug)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// The sender's port id; in a notification, the port of the socket whose
    /// request caused it.
    pub pid: u32,
    /// The bytes after the netlink header.
    pub payload: &'a [u8],
}

/// Split a datagram into netlink messages.
pub fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, NetlinkError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(NetlinkError::Malformed("message length"));
        }
        out.push(Message {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            flags: u16::from_ne_bytes([buf[off + 6], buf[off + 7]]),
            seq: u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes")),
            pid: u32::from_ne_bytes(buf[off + 12..off + 16].try_into().expect("4 bytes")),
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno and extended-ack text of an NLMSG_ERROR message (0 is an ack).
pub fn parse_error(msg: &Message) -> Result<(i32, Option<String>), NetlinkError> {
    let p = msg.payload;
    if p.len() < 4 + NLMSG_HDRLEN {
        return Err(NetlinkError::Malformed("short error message"));
    }
    let err = i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK the request is not echoed: only its header.
        let orig_len = u32::from_ne_bytes(p[4..8].try_into().expect("4 bytes")) as usize;
        let skip = if msg.flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { orig_len.max(NLMSG_HDRLEN) };
        if let Some(tlvs) = p.get(4 + ((skip + 3) & !3)..) {
            for (ty, val) in attrs(tlvs) {
                if ty == NLMSGERR_ATTR_MSG {
                    text = Some(String::from_utf8_lossy(val).trim_end_matches('\0').to_owned());
                }
            }
        }
    }
    Ok((-err, text))
}
