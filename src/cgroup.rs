//! The cgroup2 filesystem: where it is mounted, which cgroups exist, and
//! their ids.
//!
//! A cgroup's id (what `socket cgroupv2` compares) is the inode number of its
//! directory on cgroup2 (the kernfs node id), so no name resolution is needed.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// `statfs.f_type` of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (searched /proc/self/mountinfo)")]
    NoMount,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("cgroup-root {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cgroup-root {path} is not a cgroup2 mount")]
    NotCgroup2 { path: String },
}

/// One cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Path relative to the cgroup2 root, starting with `/`; shared by the
    /// tracker, the map element and the watcher (one allocation each).
    pub path: Arc<str>,
    /// The cgroup id: the directory's inode number.
    pub id: u64,
    /// Depth below the root: `/a` is level 1.
    pub level: u32,
}

/// Find the cgroup2 mount point in mountinfo text. Octal escapes (`\040`)
/// are decoded. The first cgroup2 mount wins, as with systemd.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &s[i + 1..(i + 4).min(s.len())];
            if oct.len() == 3
                && let Ok(v) = u8::from_str_radix(oct, 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_cgroup2(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Where `cgtproxy` finds the cgroup2 hierarchy (the config's `cgroup-root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// Found from /proc/self/mountinfo at start.
    Auto,
    Path(PathBuf),
}

/// Turn the config's `cgroup-root` into a verified cgroup2 mount point.
pub fn resolve_root(root: &CgroupRoot) -> Result<PathBuf, CgroupError> {
    let path = match root {
        CgroupRoot::Auto => {
            let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
            find_cgroup2_mount(&info).ok_or(CgroupError::NoMount)?
        }
        CgroupRoot::Path(p) => p.clone(),
    };
    let shown = path.display().to_string();
    match is_cgroup2(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(CgroupError::NotCgroup2 { path: shown }),
        Err(source) => Err(CgroupError::Root { path: shown, source }),
    }
}

/// The id of the cgroup at `dir`.
pub fn id_of(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// The directory of the cgroup at path string `rel` (as [`relative_path`]
/// and the walk make them) below `root`.
pub fn dir_of(root: &Path, rel: &str) -> PathBuf {
    let bytes = crate::cgname::to_bytes(rel.trim_start_matches('/'));
    root.join(std::ffi::OsStr::from_bytes(&bytes))
}

/// `dir` relative to `root`, as `/a/b`; None when `dir` is not below root.
pub fn relative_path(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    let mut s = String::new();
    for c in rel.components() {
        s.push('/');
        crate::cgname::push_name(&mut s, c.as_os_str().as_bytes());
    }
    Some(s)
}

/// Level of a relative path: the number of its components.
pub fn level_of(path: &str) -> u32 {
    path.split('/').filter(|c| !c.is_empty()).count() as u32
}

/// Every cgroup below `root` (not the root itself), parents before children.
/// Directories that vanish while we walk are skipped: cgroups come and go.
pub fn scan(root: &Path) -> io::Result<Vec<Cgroup>> {
    walk(root, "", |_, _| Ok(true))
}

/// Like [`scan`], but starting at `dir` (included), below `root`.
pub fn scan_into(root: &Path, dir: &Path, out: &mut Vec<Cgroup>) -> io::Result<()> {
    if let Some(rel) = relative_path(root, dir) {
        out.extend(walk(root, &rel, |_, _| Ok(true))?);
    }
    Ok(())
}

/// Walk the cgroup at relative path `start` ("" is the root, which is not
/// returned) and everything below it, parents before children. `enter` runs
/// on each directory (given by a path that is absolute or relative to the
/// current directory; see [`Cwd`]) before anything about it
/// is read: the watcher adds its inotify watch there, so a child created
/// meanwhile is either seen here or reported by an event. `Ok(false)` skips
/// the directory. Directories that vanish meanwhile are skipped.
///
/// System calls, which are nearly all of startup's cost: a leaf cgroup
/// costs `enter` plus one `fstatat` relative to its parent, which gives its
/// id (the inode number) and its link count; a directory's link count is 2
/// plus its subdirectories (kernfs, like tmpfs and ext4, keeps it so), so a
/// count of 2 means there is nothing to list. Only a cgroup with children
/// is opened (relative to its parent), listed with `getdents64` and made
/// the current directory, so that `enter` gets its children's bare names
/// (see [`Cwd`]); the current directory is put back when the walk ends.
pub fn walk(
    root: &Path,
    start: &str,
    mut enter: impl FnMut(&CStr, &Arc<str>) -> io::Result<bool>,
) -> io::Result<Vec<Cgroup>> {
    let mut w = Walk {
        found: Vec::new(),
        abs: Vec::new(),
        root: root.as_os_str().as_bytes(),
        buf: Vec::new(),
        cwd: Cwd::Untried,
    };
    let rel: Arc<str> = start.into();
    w.set_abs(&rel);
    let abs = CString::from_vec_with_nul(w.abs.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // The start directory by its absolute path; the rest relative to parents.
    let has_children = if rel.is_empty() {
        match enter(&abs, &rel) {
            Ok(true) => true,
            Ok(false) => return Ok(w.found),
            Err(e) if vanished(&e) => return Ok(w.found),
            Err(e) => return Err(e),
        }
    } else {
        match w.visit(&mut enter, (libc::AT_FDCWD, &abs, false), rel.clone())? {
            Some(has_children) => has_children,
            None => return Ok(w.found),
        }
    };
    if !has_children {
        return Ok(w.found);
    }
    let mut stack = vec![Pending { parent: None, name: abs, rel }];
    while let Some(dir) = stack.pop() {
        let at = dir.parent.as_ref().map_or(libc::AT_FDCWD, |p| p.as_raw_fd());
        // SAFETY: `at` is AT_FDCWD or an open directory; name is NUL-terminated.
        let fd = unsafe {
            libc::openat(at, dir.name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if vanished(&e) || e.raw_os_error() == Some(libc::ENOTDIR) {
                continue;
            }
            w.set_abs(&dir.rel);
            return Err(w.error("open", e));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = Rc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        w.list(&mut enter, &fd, &dir.rel, &mut stack)?;
    }
    Ok(w.found)
}

/// A directory with subdirectories, still to be listed.
struct Pending {
    /// Open directory `name` is relative to (None: `name` is absolute).
    parent: Option<Rc<OwnedFd>>,
    name: CString,
    rel: Arc<str>,
}

struct Walk<'a> {
    found: Vec<Cgroup>,
    root: &'a [u8],
    /// Absolute path of the directory at hand, NUL-terminated.
    abs: Vec<u8>,
    /// getdents64 buffer, allocated when the first directory is listed.
    buf: Vec<u8>,
    cwd: Cwd,
}

/// Whether the walk names children relative to the current directory.
///
/// `inotify_add_watch` has no `*at` form, so an absolute path costs a
/// lookup of every component (7 on a desktop's app cgroups): 3.7-4.6 us
/// per watch here, against 1.7 us for a name relative to the current
/// directory, which is most of startup at 100,000 cgroups. So the walk
/// changes into each directory it lists and puts the old one back when
/// it ends. The current directory is shared by a process's threads, so
/// the walk first gives its thread one of its own (`unshare(CLONE_FS)`,
/// no privilege needed; a no-op in the single-threaded daemon); where
/// that is refused (a seccomp filter), it keeps absolute paths.
enum Cwd {
    /// Nothing listed yet: nothing changed.
    Untried,
    /// The directory to go back to; names are relative from here on.
    Saved(OwnedFd),
    /// Absolute paths only.
    Unavailable,
}

impl Drop for Cwd {
    fn drop(&mut self) {
        if let Cwd::Saved(old) = self {
            // SAFETY: an open directory we own. Going back can fail only
            // if that directory was made unsearchable meanwhile; there is
            // nothing better to do then.
            unsafe { libc::fchdir(old.as_raw_fd()) };
        }
    }
}

/// `struct linux_dirent64`: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
const DIRENT_NAME: usize = 19;

impl Walk<'_> {
    fn set_abs(&mut self, rel: &str) {
        self.abs.clear();
        self.abs.extend_from_slice(self.root);
        self.abs.extend_from_slice(&crate::cgname::to_bytes(rel));
        self.abs.push(0);
    }

    fn abs(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.abs).unwrap_or_default()
    }

    /// Make `dir` the current directory, so its children can be named
    /// relative to it; false when the walk keeps absolute paths.
    fn change_into(&mut self, dir: &OwnedFd) -> bool {
        if let Cwd::Untried = self.cwd {
            self.cwd = Cwd::Unavailable;
            // SAFETY: unshare with CLONE_FS alone creates no namespace.
            if unsafe { libc::unshare(libc::CLONE_FS) } == 0 {
                // SAFETY: a NUL-terminated literal; O_PATH needs no permission.
                let fd = unsafe { libc::open(c".".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: a fresh descriptor we own.
                    self.cwd = Cwd::Saved(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: an open directory.
        matches!(self.cwd, Cwd::Saved(_)) && unsafe { libc::fchdir(dir.as_raw_fd()) } == 0
    }

    fn error(&self, what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what} {}: {e}", crate::cgname::escape(&self.abs().to_string_lossy())))
    }

    /// `enter`, then `fstatat(at, name)`: records the cgroup and returns
    /// whether it has subdirectories; None when it is skipped or gone.
    /// `relative`: `name` is also valid relative to the current directory.
    fn visit(
        &mut self,
        enter: &mut impl FnMut(&CStr, &Arc<str>) -> io::Result<bool>,
        (at, name, relative): (RawFd, &CStr, bool),
        rel: Arc<str>,
    ) -> io::Result<Option<bool>> {
        self.set_abs(&rel);
        let entered = if relative { enter(name, &rel) } else { enter(self.abs(), &rel) };
        match entered {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        // SAFETY: a zeroed stat we own as the out-pointer; `at` is AT_FDCWD
        // or an open directory and name NUL-terminated.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstatat(at, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            let e = io::Error::last_os_error();
            return if vanished(&e) { Ok(None) } else { Err(self.error("stat", e)) };
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(None);
        }
        self.found.push(Cgroup { level: level_of(&rel), path: rel, id: st.st_ino });
        // 1 is "not counted" (btrfs); 2 is "no subdirectories".
        Ok(Some(st.st_nlink != 2))
    }

    /// List `fd` (the directory at `rel`) and visit every subdirectory;
    /// those with children of their own go on `stack`.
    fn list(
        &mut self,
        enter: &mut impl FnMut(&CStr, &Arc<str>) -> io::Result<bool>,
        fd: &Rc<OwnedFd>,
        rel: &Arc<str>,
        stack: &mut Vec<Pending>,
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(32 * 1024, 0);
        let relative = self.change_into(fd);
        let result = loop {
            // SAFETY: fd is an open directory and buf a writable buffer of its length.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if vanished(&e) {
                    break Ok(());
                }
                self.set_abs(rel);
                break Err(self.error("list", e));
            }
            if n == 0 {
                break Ok(());
            }
            let mut off = 0;
            let mut failed = None;
            while off < n as usize {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let d_type = buf[off + 18];
                let entry = &buf[off + DIRENT_NAME..off + reclen];
                off += reclen;
                if d_type != libc::DT_DIR && d_type != libc::DT_UNKNOWN {
                    continue;
                }
                let Ok(name) = CStr::from_bytes_until_nul(entry) else { continue };
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                let child: Arc<str> = crate::cgname::join(rel, name.to_bytes()).into();
                match self.visit(enter, (fd.as_raw_fd(), name, relative), child.clone()) {
                    Ok(Some(true)) => stack.push(Pending { parent: Some(fd.clone()), name: name.into(), rel: child }),
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        self.buf = buf;
        result
    }
}

/// Errors that mean "this cgroup was removed meanwhile".
pub fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2_mount(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2_mount(unified), Some("/sys/fs/cgroup".into()));
        let spaced = "35 24 0:30 / /mnt/my\\040cg rw shared:9 - cgroup2 none rw\n";
        assert_eq!(find_cgroup2_mount(spaced), Some("/mnt/my cg".into()));
        assert_eq!(find_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn paths_and_levels() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            relative_path(root, Path::new("/sys/fs/cgroup/a.slice/b.service")).as_deref(),
            Some("/a.slice/b.service")
        );
        assert_eq!(relative_path(root, Path::new("/tmp")), None);
        assert_eq!(level_of("/a.slice/b.service"), 2);
        assert_eq!(level_of("/"), 0);
    }

    #[test]
    fn scan_walks_a_tree_of_plain_directories() {
        let tmp = std::env::temp_dir().join(format!("cgtproxy-scan-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("a/b/c")).unwrap();
        std::fs::create_dir_all(tmp.join("d")).unwrap();
        std::fs::write(tmp.join("a/cgroup.procs"), "").unwrap();
        let mut found = scan(&tmp).unwrap();
        found.sort_by(|x, y| x.path.cmp(&y.path));
        let paths: Vec<_> = found.iter().map(|c| (&*c.path, c.level)).collect();
        assert_eq!(paths, [("/a", 1), ("/a/b", 2), ("/a/b/c", 3), ("/d", 1)]);
        assert_eq!(found[0].id, id_of(&tmp.join("a")).unwrap());
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(scan(&tmp).unwrap().is_empty(), "a vanished root scans as empty");
    }

    /// `enter` gets names relative to the directory being listed, which is
    /// this thread's current directory then, and only this thread's: the
    /// test harness's main thread (what /proc/self/cwd shows) never moves.
    /// The current directory is back where it was when the walk ends.
    #[test]
    fn walk_names_children_relative_to_a_private_current_directory() {
        let tmp = std::env::temp_dir().join(format!("cgtproxy-cwd-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("a/b/c")).unwrap();
        std::fs::create_dir_all(tmp.join("d")).unwrap();
        let before = std::env::current_dir().unwrap();
        let process_cwd = || std::fs::read_link("/proc/self/cwd").unwrap();
        let main_before = process_cwd();
        let mut seen = Vec::new();
        walk(&tmp, "", |dir, rel| {
            let dir = Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
            if rel.is_empty() {
                assert_eq!(dir, tmp, "the start is named by its absolute path");
            } else {
                let parent = tmp.join(rel.trim_start_matches('/')).parent().unwrap().to_path_buf();
                assert!(dir.is_relative(), "{rel} was given as {}", dir.display());
                assert_eq!(std::env::current_dir().unwrap(), parent, "while entering {rel}");
                assert!(std::fs::metadata(dir).unwrap().is_dir(), "{rel} resolves relative to the current directory");
                assert_eq!(process_cwd(), main_before, "the main thread's directory moved while entering {rel}");
            }
            seen.push(rel.to_string());
            Ok(true)
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, ["", "/a", "/a/b", "/a/b/c", "/d"]);
        assert_eq!(std::env::current_dir().unwrap(), before, "the walk put the current directory back");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
