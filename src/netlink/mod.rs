//! A small synchronous netlink layer: message building, one socket type,
//! and reply parsing. nf_tables and rtnetlink messages are both built on it.
//!
//! Requests go out in one `sendmsg`; the kernel processes nfnetlink batches
//! and rtnetlink requests in that call, so every ack is queued by the time
//! it returns and reading them never races the kernel.

mod attrs;
mod error;
mod msg;
mod reply;
mod socket;

pub use attrs::{Attrs, MsgWriter, attrs};
pub use error::{NetlinkError, kernel_error, strerror};
pub use msg::{
    Message, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_MULTI,
    NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, messages, parse_error,
};
pub use socket::NlSocket;
