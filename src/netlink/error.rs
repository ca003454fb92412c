//! What can go wrong talking netlink, and how a kernel refusal is worded
//! (errno text, extended ack, the usual cause).

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
