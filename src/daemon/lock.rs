//! One daemon per network namespace: an abstract unix socket named after
//! the namespace (`@cgtproxy-<netns inode>`). Abstract names are private to
//! a network namespace and vanish with the last descriptor, so binding one
//! is an exact per-namespace lock that a SIGKILL releases. Two daemons in
//! one namespace would rewrite each other's table on every notification.
//!
//! Any local user can bind an abstract name (there are no permissions on
//! them), so a name held by something that is not a root process (a
//! squatter, or a socket nobody listens on) must not keep the daemon from
//! starting: the holder is asked for its credentials (SO_PEERCRED), and
//! only a root listener counts as another instance.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The lock; held for the daemon's lifetime, released when dropped or when
/// the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    _fd: Option<OwnedFd>,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another cgtproxy (pid {pid}) already runs in this network namespace (net:[{netns}], lock @{name}): \
         refusing to start a second one, which would fight it over table inet cgtproxy; stop it first"
    )]
    Taken { pid: i32, netns: u64, name: String },
    #[error("cannot create the instance lock @{name}: {source}")]
    Socket {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// What happened when taking the lock, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    Held,
    /// The name is held by a socket that is not another root daemon's
    /// (uid, or None when nobody listens on it): started without the lock.
    Squatted(Option<u32>),
}

/// The lock's abstract name for the namespace with inode `netns`.
pub fn name(netns: u64) -> String {
    format!("cgtproxy-{netns}")
}

fn sockaddr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: an abstract name.
    for (dst, src) in sa.sun_path[1..].iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len().min(sa.sun_path.len() - 1);
    (sa, len as libc::socklen_t)
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The holder's credentials: (pid, uid), or None when nobody listens.
fn holder(name: &str) -> Option<(i32, u32)> {
    let fd = socket().ok()?;
    let (sa, len) = sockaddr(name);
    // SAFETY: sa is a valid sockaddr_un of length len.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: ucred is plain data; getsockopt writes at most its size.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut clen = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and clen are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut clen)
    };
    (rc == 0).then_some((cred.pid, cred.uid))
}

/// Take the lock of this network namespace (inode `netns`).
pub fn take(netns: u64) -> Result<(InstanceLock, Taken), LockError> {
    let name = name(netns);
    let err = |source| LockError::Socket { name: name.clone(), source };
    let fd = socket().map_err(err)?;
    let (sa, len) = sockaddr(&name);
    // SAFETY: sa is a valid sockaddr_un of length len.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) };
    if rc == 0 {
        // SAFETY: listen(2) on our bound socket; a listener is what lets a
        // second instance ask for our credentials.
        if unsafe { libc::listen(fd.as_raw_fd(), 4) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        return Ok((InstanceLock { _fd: Some(fd), name }, Taken::Held));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EADDRINUSE) {
        return Err(err(e));
    }
    match holder(&name) {
        Some((pid, 0)) => Err(LockError::Taken { pid, netns, name }),
        Some((_, uid)) => Ok((InstanceLock { _fd: None, name }, Taken::Squatted(Some(uid)))),
        None => Ok((InstanceLock { _fd: None, name }, Taken::Squatted(None))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_abstract_and_per_namespace() {
        let (sa, len) = sockaddr(&name(4026531840));
        assert_eq!(sa.sun_path[0], 0);
        let n: Vec<u8> = sa.sun_path[1..len as usize - 2].iter().map(|c| *c as u8).collect();
        assert_eq!(n, b"cgtproxy-4026531840");
    }
}
