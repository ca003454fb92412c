//! A small synchronous netlink layer: message building, one socket type,
//! and reply parsing. nf_tables and rtnetlink messages are both built on it.
//!
//! Requests go out in one `sendmsg`; the kernel processes nfnetlink batches
//! and rtnetlink requests in that call, so every ack is queued by the time
//! it returns and reading them never races the kernel.

mod attrs;
mod reply;
mod socket;

pub use attrs::{Attrs, MsgWriter, attrs};
pub use socket::NlSocket;

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
const NLMSGERR_ATTR_MSG: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: {message}")]
    Kernel { what: String, errno: i32, message: String },
    #[error("no reply from the kernel for {0}")]
    NoReply(String),
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
    #[error("the kernel dropped netlink messages for this socket (ENOBUFS)")]
    Overrun,
    #[error("{0}: the data kept changing while it was read (dump interrupted)")]
    Interrupted(String),
    #[error("{what}: attribute {ty} is {len} bytes, more than a netlink attribute holds (65535)")]
    TooLong { what: String, ty: u16, len: usize },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

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
        let skip = if msg.flags & 0x100 != 0 { NLMSG_HDRLEN } else { orig_len.max(NLMSG_HDRLEN) };
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

/// The error for the kernel refusing `what` with `errno`, with the
/// extended-ack text and, where an errno has one usual cause, that cause.
pub fn kernel_error(what: &str, errno: i32, ext: Option<String>) -> NetlinkError {
    let mut message = strerror(errno);
    if let Some(ext) = ext.filter(|e| !e.is_empty()) {
        message = format!("{message} ({ext})");
    }
    if errno == libc::EPERM {
        message.push_str(": missing CAP_NET_ADMIN (run as root, or grant the capability)");
    }
    NetlinkError::Kernel { what: what.to_owned(), errno, message }
}

/// "Operation not permitted" style text for an errno.
pub fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}
