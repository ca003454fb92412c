//! inotify on every cgroup directory.
//!
//! The rule that makes it lossless: a directory's watch is added *before*
//! its children are listed, so a child created at any moment is either
//! listed or reported by an event (or both; duplicates are harmless). A
//! queue overflow, or a rename, is answered with a full rescan.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

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
}

pub struct Watcher {
    inotify: Inotify,
    root: PathBuf,
    /// Relative path of each watched directory ("" is the root).
    dirs: HashMap<WatchDescriptor, Arc<str>>,
    buf: Vec<u8>,
    /// Some directories could not be watched (fs.inotify.max_user_watches
    /// reached): the daemon rescans periodically instead.
    pub degraded: bool,
    /// The watch limit was reported (once per run).
    warned: bool,
}

fn mask() -> WatchMask {
    WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO | WatchMask::ONLYDIR
}

impl Watcher {
    pub fn new(root: &Path) -> io::Result<Self> {
        Ok(Watcher {
            inotify: Inotify::init()?,
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            buf: vec![0; 64 * 1024],
            degraded: false,
            warned: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Number of watched directories.
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Watch the cgroup at relative path `rel` ("" for the root) and
    /// everything below it; returns the cgroups found (`rel` included
    /// unless it is the root). Each directory is watched before it is
    /// listed (see [`cgroup::walk`]).
    pub fn watch_tree(&mut self, rel: &str) -> io::Result<Vec<Cgroup>> {
        let root = self.root.clone();
        cgroup::walk(&root, rel, |dir, rel| match self.inotify.watches().add(dir, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, rel.clone());
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
            // Vanished: the walk skips it.
            Err(e) if cgroup::vanished(&e) => Err(e),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Out of inotify watches: keep going unwatched here.
                if !self.warned {
                    self.warned = true;
                    tracing::error!(
                        dir = %dir.display(),
                        "fs.inotify.max_user_watches is exhausted: cgroups below unwatched directories are \
                         found by a rescan every second until it is raised"
                    );
                }
                self.degraded = true;
                Ok(true)
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("inotify watch on {}: {e}", dir.display()))),
        })
    }

    /// Read every queued event without blocking and turn them into changes.
    pub fn read(&mut self) -> io::Result<Vec<Change>> {
        let mut raw: Vec<(WatchDescriptor, EventMask, Option<std::ffi::OsString>)> = Vec::new();
        loop {
            match self.inotify.read_events(&mut self.buf) {
                Ok(events) => {
                    let before = raw.len();
                    raw.extend(events.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_os_string()))));
                    if raw.len() == before {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let mut changes = Vec::new();
        for (wd, mask, name) in raw {
            if mask.contains(EventMask::Q_OVERFLOW) {
                changes.push(Change::Rescan);
                continue;
            }
            if mask.contains(EventMask::IGNORED) {
                self.dirs.remove(&wd);
                continue;
            }
            if !mask.contains(EventMask::ISDIR) {
                continue;
            }
            let (Some(parent), Some(name)) = (self.dirs.get(&wd), name) else {
                continue;
            };
            let rel = format!("{parent}/{}", name.to_string_lossy());
            if mask.intersects(EventMask::MOVED_FROM | EventMask::MOVED_TO) {
                // Watches below a renamed directory keep old paths.
                changes.push(Change::Rescan);
            } else if mask.contains(EventMask::CREATE) {
                changes.push(Change::Appeared(self.watch_tree(&rel)?));
            } else if mask.contains(EventMask::DELETE) {
                changes.push(Change::Vanished(rel));
            }
        }
        Ok(changes)
    }

    /// Forget every watch and watch the whole tree again; returns every cgroup.
    pub fn rewatch_all(&mut self) -> io::Result<Vec<Cgroup>> {
        for (wd, _) in self.dirs.drain() {
            let _ = self.inotify.watches().remove(wd);
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
