//! inotify on every cgroup directory.
//!
//! The rule that makes it lossless: a directory's watch is added *before*
//! its children are listed, so a child created at any moment is either
//! listed or reported by an event (or both; duplicates are harmless). A
//! queue overflow, or a rename, is answered with a full rescan.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use super::wds::Watches;
use crate::cgroup::{self, Cgroup};

/// What happened in the cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New cgroups: a created directory and everything found inside it.
    Appeared(Vec<Cgroup>),
    /// The cgroup at this relative path is gone, with its subtree.
    Vanished(String),
    /// Events were lost or paths moved: rescan everything.
    Rescan,
    /// The root's own watch went away: it was removed or unmounted.
    RootGone,
}

pub struct Watcher {
    /// The inotify instance (non-blocking).
    fd: OwnedFd,
    /// Shared with each walk, which runs while `self` is borrowed.
    root: Arc<Path>,
    /// Relative path of each watched directory ("" is the root), by watch
    /// descriptor.
    dirs: Watches,
    buf: Vec<u8>,
    /// Some directories could not be watched (fs.inotify.max_user_watches
    /// reached): the daemon rescans periodically instead.
    pub degraded: bool,
    /// The watch limit was reported (once per run).
    warned: bool,
}

const MASK: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO | libc::IN_ONLYDIR;

/// `struct inotify_event`: wd i32, mask u32, cookie u32, len u32, name.
const EVENT_HEADER: usize = 16;

impl Watcher {
    pub fn new(root: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 has no memory arguments.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            root: root.into(),
            dirs: Watches::default(),
            buf: vec![0; 64 * 1024],
            degraded: false,
            warned: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Number of watched directories.
    pub fn watched(&self) -> usize {
        self.dirs.count()
    }

    /// Watch the cgroup at relative path `rel` ("" for the root) and
    /// everything below it; returns the cgroups found (`rel` included
    /// unless it is the root). Each directory is watched before it is
    /// listed (see [`cgroup::walk`]).
    pub fn watch_tree(&mut self, rel: &str) -> io::Result<Vec<Cgroup>> {
        let root = self.root.clone();
        cgroup::walk(&root, rel, |dir, rel| self.add(dir, rel))
    }

    /// Add the watch of one directory (`dir`: absolute, or relative to the
    /// walk's current directory); Ok(false) when it is not one.
    fn add(&mut self, dir: &CStr, rel: &Arc<str>) -> io::Result<bool> {
        // SAFETY: dir is NUL-terminated; the fd is our inotify instance.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), dir.as_ptr(), MASK) };
        if wd >= 0 {
            self.dirs.insert(wd, rel.clone());
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTDIR) => Ok(false),
            // Vanished: the walk skips it.
            _ if cgroup::vanished(&e) => Err(e),
            Some(libc::ENOSPC) => {
                // Out of inotify watches: keep going unwatched here.
                if !self.warned {
                    self.warned = true;
                    let dir = format!("{}{}", self.root.display(), crate::cgname::escape(rel));
                    tracing::error!(
                        dir,
                        "fs.inotify.max_user_watches is exhausted at {dir}: cgroups below unwatched directories are \
                         found by a rescan every second until it is raised"
                    );
                }
                self.degraded = true;
                Ok(true)
            }
            _ => Err(io::Error::new(
                e.kind(),
                format!("inotify watch on {}{}: {e}", self.root.display(), crate::cgname::escape(rel)),
            )),
        }
    }

    /// Read every queued event without blocking and turn them into changes.
    pub fn read(&mut self) -> io::Result<Vec<Change>> {
        let mut changes = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            // SAFETY: buf is a writable buffer of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => break Err(e),
                }
            }
            if n == 0 {
                break Ok(());
            }
            if let Err(e) = self.events(&buf[..n as usize], &mut changes) {
                break Err(e);
            }
            // The kernel hands out events while they fit: room left for the
            // largest one means the queue was empty, so skip the read that
            // would say EAGAIN (one system call less per cgroup event).
            if buf.len() - n as usize >= EVENT_HEADER + 256 {
                break Ok(());
            }
        };
        self.buf = buf;
        result.map(|()| changes)
    }

    /// Turn one read's worth of events into changes.
    fn events(&mut self, mut buf: &[u8], changes: &mut Vec<Change>) -> io::Result<()> {
        let field = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        while buf.len() >= EVENT_HEADER {
            let wd = field(buf, 0) as i32;
            let mask = field(buf, 4);
            let len = field(buf, 12) as usize;
            let name = &buf[EVENT_HEADER..(EVENT_HEADER + len).min(buf.len())];
            buf = &buf[(EVENT_HEADER + len).min(buf.len())..];
            if mask & libc::IN_Q_OVERFLOW != 0 {
                changes.push(Change::Rescan);
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                if self.dirs.remove(wd).is_some_and(|rel| rel.is_empty()) {
                    changes.push(Change::RootGone);
                }
                continue;
            }
            if mask & libc::IN_ISDIR == 0 {
                continue;
            }
            let (Some(parent), Ok(name)) = (self.dirs.get(wd), CStr::from_bytes_until_nul(name)) else {
                continue;
            };
            let rel = crate::cgname::join(parent, name.to_bytes());
            if mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
                // Watches below a renamed directory keep old paths.
                changes.push(Change::Rescan);
            } else if mask & libc::IN_CREATE != 0 {
                changes.push(Change::Appeared(self.watch_tree(&rel)?));
            } else if mask & libc::IN_DELETE != 0 {
                changes.push(Change::Vanished(rel));
            }
        }
        Ok(())
    }

    /// Forget every watch and watch the whole tree again; returns every cgroup.
    pub fn rewatch_all(&mut self) -> io::Result<Vec<Cgroup>> {
        for wd in self.dirs.drain() {
            // SAFETY: removing a watch of our own instance.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
        self.degraded = false;
        self.watch_tree("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_mkdir_is_seen_whole() {
        let tmp = std::env::temp_dir().join(format!("cgtproxy-watch-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut w = Watcher::new(&tmp).unwrap();
        assert!(w.watch_tree("").unwrap().is_empty());
        std::fs::create_dir_all(tmp.join("a/b/c")).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for c in w.read().unwrap() {
            if let Change::Appeared(cgs) = c {
                seen.extend(cgs.into_iter().map(|c| c.path.to_string()));
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["/a", "/a/b", "/a/b/c"]);
        std::fs::remove_dir(tmp.join("a/b/c")).unwrap();
        assert_eq!(w.read().unwrap(), [Change::Vanished("/a/b/c".into())]);
        std::fs::rename(tmp.join("a/b"), tmp.join("a/x")).unwrap();
        assert!(w.read().unwrap().contains(&Change::Rescan));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
