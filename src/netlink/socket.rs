//! A netlink socket talking to the kernel: requests with acks, dumps, and
//! (for [`NlSocket::monitor`]) multicast notifications.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::error::NetlinkError;
use super::reply::{Acks, Dump};

const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
const SOL_NETLINK: libc::c_int = 270;
/// Socket buffers big enough for a batch of 100,000 map elements (and, on
/// a monitor, the notifications such a batch produces).
const BUFFER_BYTES: libc::c_int = 32 << 20;
const RECV_BYTES: usize = 1 << 20;
/// How long a request waits for the kernel. The kernel answers within the
/// `sendmsg` call; this only guards against a request that expects no reply.
const REPLY_TIMEOUT_MS: i32 = 10_000;
/// A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried
/// this many times before giving up.
const DUMP_ATTEMPTS: usize = 8;

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

    /// A socket that receives the notifications of multicast `groups`
    /// (NETLINK_ADD_MEMBERSHIP, one group number each).
    pub fn monitor(protocol: libc::c_int, groups: &[u32]) -> io::Result<Self> {
        let sock = Self::open(protocol)?;
        for &g in groups {
            setsockopt(sock.as_raw_fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g as libc::c_int).map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::EPERM) { ": missing CAP_NET_ADMIN" } else { "" };
                io::Error::new(e.kind(), format!("joining netlink group {g}: {e}{why}"))
            })?;
        }
        Ok(sock)
    }

    /// Ask the kernel to check dump requests strictly and honour their
    /// filters (rtnetlink: a route dump of one table costs nothing for the
    /// others). Kernels before 4.20 ignore it.
    pub fn strict_check(&self) {
        let _ = setsockopt(self.as_raw_fd(), SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
    }

    /// Raise the receive buffer to `bytes` past the system limit
    /// (SO_RCVBUFFORCE, CAP_NET_ADMIN): a monitor that must not lose the
    /// notifications of a commit larger than the default 32 MiB hold.
    pub fn force_recv_buffer(&self, bytes: libc::c_int) -> io::Result<()> {
        setsockopt(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The port id the kernel gave this socket: notifications caused by our
    /// own requests carry it as their nlmsg_pid.
    pub fn port_id(&self) -> io::Result<u32> {
        // SAFETY: sockaddr_nl is plain data, filled by getsockname.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr and len are valid for writing.
        let rc = unsafe { libc::getsockname(self.as_raw_fd(), (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(addr.nl_pid) }
    }

    /// Attach a classic BPF socket filter (SO_ATTACH_FILTER): what it drops
    /// never wakes the process.
    pub fn attach_filter(&self, prog: &[libc::sock_filter]) -> io::Result<()> {
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
        // SAFETY: fprog points at `prog`, which outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
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
    /// ENOBUFS (the kernel dropped messages for us) is
    /// [`NetlinkError::Overrun`].
    fn recv(&mut self, timeout_ms: i32) -> Result<Option<usize>, NetlinkError> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
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
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::ENOBUFS) => Err(NetlinkError::Overrun),
                _ => Err(e.into()),
            };
        }
        Ok(Some(n as usize))
    }

    /// Every queued datagram of a monitor socket, without waiting. Err
    /// [`NetlinkError::Overrun`] when notifications were lost (the caller
    /// resynchronises); what was read before that is dropped too.
    pub fn read_queued(&mut self) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut out = Vec::new();
        self.each_queued(|d| out.push(d.to_vec()))?;
        Ok(out)
    }

    /// Hand every queued datagram to `each` as it is read, without waiting
    /// and without keeping it: a 100,000-element commit queues about 9 MiB
    /// of notifications, which need not all be in memory at once. Err
    /// [`NetlinkError::Overrun`] when notifications were lost; those read
    /// before were handed over already.
    pub fn each_queued(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), NetlinkError> {
        while let Some(n) = self.recv(0)? {
            each(&self.recv_buf[..n]);
        }
        Ok(())
    }

    /// Send requests and wait for the ack of each sequence number in `acks`,
    /// described by its text for errors. An error addressed to one of
    /// `fatal` (a batch's BEGIN message: EPERM, nf_tables missing) ends the
    /// wait at once, since no other reply will come. All errors are
    /// collected: the first is returned, naming its request.
    pub fn transact(
        &mut self,
        buf: &[u8],
        acks: &[(u32, String)],
        fatal: &[(u32, String)],
    ) -> Result<(), NetlinkError> {
        self.send(buf)?;
        let mut replies = Acks::new(acks, fatal);
        if acks.is_empty() {
            return Ok(());
        }
        loop {
            let n = match self.recv(REPLY_TIMEOUT_MS) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    let what = replies.waiting_for().to_owned();
                    return Err(replies.take_error().unwrap_or(NetlinkError::NoReply(what)));
                }
                // Our own socket overran: acks were lost, the outcome is unknown.
                Err(e) => return Err(replies.take_error().unwrap_or(e)),
            };
            if replies.feed(&self.recv_buf[..n])? {
                break;
            }
        }
        let result = replies.finish();
        if result.is_err() {
            // Acks after a refusal only repeat it.
            self.drain();
        }
        result
    }

    /// Discard whatever is queued.
    pub fn drain(&mut self) {
        while let Ok(Some(_)) = self.recv(0) {}
    }

    /// Send a dump request and call `each` with the type and payload of
    /// every reply message until NLMSG_DONE. Replies with another sequence
    /// number (stale ones) are skipped; an error in NLMSG_DONE is returned;
    /// a dump the kernel marks interrupted (NLM_F_DUMP_INTR: the data changed
    /// while it was read) is repeated, and `each` only sees a complete one.
    /// The meaning of each reply is decided in [`Dump`].
    pub fn dump(&mut self, buf: &[u8], what: &str, each: impl FnMut(u16, &[u8])) -> Result<(), NetlinkError> {
        let mut req = buf.to_vec();
        if req.len() < 12 {
            return Err(NetlinkError::Malformed("short request"));
        }
        for _ in 0..DUMP_ATTEMPTS {
            let seq = u32::from_ne_bytes(req[8..12].try_into().expect("4 bytes"));
            self.send(&req)?;
            let mut dump = Dump::new(seq, what);
            loop {
                let Some(n) = self.recv(REPLY_TIMEOUT_MS)? else {
                    return Err(NetlinkError::NoReply(what.to_owned()));
                };
                if dump.feed(&self.recv_buf[..n])? {
                    break;
                }
            }
            if dump.interrupted {
                let seq = self.next_seq();
                req[8..12].copy_from_slice(&seq.to_ne_bytes());
                continue;
            }
            return dump.each(each);
        }
        Err(NetlinkError::Interrupted(what.to_owned()))
    }

    /// Like [`NlSocket::transact`] for a single request expecting an ack.
    pub fn request(&mut self, buf: &[u8], seq: u32, what: &str) -> Result<(), NetlinkError> {
        self.transact(buf, &[(seq, what.to_owned())], &[])
    }
}
