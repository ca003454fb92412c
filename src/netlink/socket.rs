//! A netlink socket talking to the kernel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, NetlinkError, messages, parse_error, strerror};

const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_CAP_ACK: libc::c_int = 10;
const SOL_NETLINK: libc::c_int = 270;
/// Socket buffers big enough for a batch of 100,000 map elements.
const BUFFER_BYTES: libc::c_int = 32 << 20;
const RECV_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    recv_buf: Vec<u8>,
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: value outlives the call; the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl NlSocket {
    /// Open a socket of netlink `protocol` (NETLINK_NETFILTER, NETLINK_ROUTE).
    pub fn open(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zero means "kernel picks the port".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Error messages carry the kernel's explanation, not the request.
        let _ = setsockopt(fd.as_raw_fd(), SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = setsockopt(fd.as_raw_fd(), SOL_NETLINK, NETLINK_CAP_ACK, 1);
        // The FORCE variants need CAP_NET_ADMIN, which the daemon has; fall
        // back to the capped ones for unprivileged `print`/`check`.
        for (force, plain) in [(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF), (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)] {
            if setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, force, BUFFER_BYTES).is_err() {
                let _ = setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, plain, BUFFER_BYTES);
            }
        }
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
        Ok(NlSocket { fd, seq: seed, recv_buf: vec![0; RECV_BYTES] })
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Continue numbering after `seq` (the last one a batch used).
    pub fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// Send `buf` to the kernel in one datagram.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl zeroed = the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and addr are valid for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Receive one datagram, waiting at most `timeout_ms` (-1: forever).
    fn recv(&mut self, timeout_ms: i32) -> io::Result<Option<usize>> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                return Ok(None);
            }
            break;
        }
        // SAFETY: recv_buf is valid for its length.
        let n = unsafe {
            libc::recv(self.fd.as_raw_fd(), self.recv_buf.as_mut_ptr().cast(), self.recv_buf.len(), libc::MSG_DONTWAIT)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(n as usize))
    }

    /// Send requests and wait for the ack of each sequence number in `acks`,
    /// described by its text for errors. All errors are collected: the first
    /// is returned, naming its request.
    pub fn transact(&mut self, buf: &[u8], acks: &[(u32, String)]) -> Result<(), NetlinkError> {
        self.send(buf)?;
        let mut pending: std::collections::HashMap<u32, &str> = acks.iter().map(|(s, w)| (*s, w.as_str())).collect();
        let mut first_error: Option<NetlinkError> = None;
        while !pending.is_empty() {
            let Some(n) = self.recv(10_000)? else {
                let what = pending.values().next().copied().unwrap_or("request");
                return Err(first_error.unwrap_or_else(|| NetlinkError::NoReply(what.to_owned())));
            };
            let data = self.recv_buf[..n].to_vec();
            for msg in messages(&data)? {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, ext) = parse_error(&msg)?;
                let Some(what) = pending.remove(&msg.seq) else {
                    continue;
                };
                if errno != 0 && first_error.is_none() {
                    let mut message = strerror(errno);
                    if let Some(ext) = ext.filter(|e| !e.is_empty()) {
                        message = format!("{message} ({ext})");
                    }
                    first_error = Some(NetlinkError::Kernel { what: what.to_owned(), errno, message });
                }
            }
            if first_error.is_some() {
                // The kernel rejected the batch as a whole; remaining acks,
                // if any, only repeat that.
                self.drain();
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Discard whatever is queued.
    pub fn drain(&mut self) {
        while let Ok(Some(_)) = self.recv(0) {}
    }

    /// Send a dump request and call `each` with the payload of every reply
    /// message until NLMSG_DONE.
    pub fn dump(&mut self, buf: &[u8], what: &str, mut each: impl FnMut(u16, &[u8])) -> Result<(), NetlinkError> {
        self.send(buf)?;
        loop {
            let Some(n) = self.recv(10_000)? else {
                return Err(NetlinkError::NoReply(what.to_owned()));
            };
            let data = self.recv_buf[..n].to_vec();
            for msg in messages(&data)? {
                match msg.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let (errno, ext) = parse_error(&msg)?;
                        if errno == 0 {
                            return Ok(());
                        }
                        let mut message = strerror(errno);
                        if let Some(ext) = ext.filter(|e| !e.is_empty()) {
                            message = format!("{message} ({ext})");
                        }
                        return Err(NetlinkError::Kernel { what: what.to_owned(), errno, message });
                    }
                    ty => {
                        each(ty, msg.payload);
                        if msg.flags & NLM_F_MULTI == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Like [`NlSocket::transact`] for a single request expecting an ack.
    pub fn request(&mut self, buf: &[u8], seq: u32, what: &str) -> Result<(), NetlinkError> {
        self.transact(buf, &[(seq, what.to_owned())])
    }
}
