//! SIGTERM, SIGINT and SIGHUP as a file descriptor (signalfd), so the main
//! loop polls them with inotify and netlink instead of racing a handler.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Signals {
    fd: OwnedFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate(i32),
    Reload,
}

impl Signals {
    /// Block the signals in this thread (call before starting threads) and
    /// open a signalfd for them.
    pub fn new() -> io::Result<Self> {
        // SAFETY: sigset operations on a zeroed set we own.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The pending signals, oldest first.
    pub fn read(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data, read into a zeroed value.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: info is valid for `size` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
            if n != size as isize {
                return out;
            }
            let signo = info.ssi_signo as i32;
            out.push(if signo == libc::SIGHUP { Signal::Reload } else { Signal::Terminate(signo) });
        }
    }
}
