//! The cgroup2 filesystem: where it is mounted, which cgroups exist, and
//! their ids.
//!
//! A cgroup's id (what `socket cgroupv2` compares) is the inode number of its
//! directory on cgroup2 (the kernfs node id), so no name resolution is needed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::CgroupRoot;

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

fn is_cgroup2(path: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
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

/// `dir` relative to `root`, as `/a/b`; None when `dir` is not below root.
pub fn relative_path(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    let mut s = String::new();
    for c in rel.components() {
        s.push('/');
        s.push_str(&c.as_os_str().to_string_lossy());
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
/// on each directory before it is listed (the watcher adds its inotify watch
/// there, so no child created meanwhile is missed); `Ok(false)` skips the
/// directory. Directories that vanish meanwhile are skipped.
pub fn walk(
    root: &Path,
    start: &str,
    mut enter: impl FnMut(&Path, &Arc<str>) -> io::Result<bool>,
) -> io::Result<Vec<Cgroup>> {
    let mut found = Vec::new();
    let mut stack: Vec<Arc<str>> = vec![start.into()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(rel.trim_start_matches('/'));
        match enter(&dir, &rel) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        }
        if !rel.is_empty() {
            match id_of(&dir) {
                Ok(id) => found.push(Cgroup { level: level_of(&rel), path: rel.clone(), id }),
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(format!("{rel}/{}", entry.file_name().to_string_lossy()).into());
            }
        }
    }
    Ok(found)
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
}
