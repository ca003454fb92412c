//! The daemon's state file: what `status` and `reload` learn about the
//! running daemon. Written atomically at start, reload and resync; removed
//! on exit. `$CGTPROXY_STATE`, else `$RUNTIME_DIRECTORY/state.json` (systemd's
//! `RuntimeDirectory=`), else `/run/cgtproxy/state.json`.
//!
//! Nothing here follows a symbolic link: a symlinked state directory or
//! state file is refused with an error naming it, files are created with
//! `O_NOFOLLOW|O_CREAT|O_EXCL` and renamed into place, read with
//! `O_NOFOLLOW` and only when they are regular files of bounded size.
//! docs/security.md ("Files, signals and input limits") says why.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub version: String,
    pub config: String,
    pub cgroup_root: String,
    /// Seconds since the epoch.
    pub started: u64,
    pub startup_ms: f64,
    pub reloads: u32,
    /// Full rebuilds after outside changes, overflow or failed updates.
    pub resyncs: u32,
    pub cgroups: usize,
    pub elements: usize,
    pub strict: bool,
    /// The daemon's network namespace (inode of /proc/self/ns/net), so
    /// `status` run elsewhere can say so; 0 when unknown (older files).
    #[serde(default)]
    pub netns: u64,
    /// The proxy-loop guard's findings: tproxy listeners, the cgroups kept
    /// direct, mark collisions.
    #[serde(default)]
    pub guard: Vec<String>,
    /// Gateway mode: how bridged clients escape br_netfilter (empty: no
    /// gateway tproxy entry).
    #[serde(default)]
    pub gateway_bridge: String,
    /// One line per set classification is published to (`nft-set`): how
    /// many cgroups it holds, or why it cannot be filled.
    #[serde(default)]
    pub published: Vec<String>,
    /// The table and routing stay when the daemon stops (fail closed).
    #[serde(default)]
    pub keep_on_exit: bool,
    /// Set while an error keeps the daemon from following the tree; the
    /// last good kernel state stays in force.
    #[serde(default)]
    pub degraded: Option<String>,
    /// The daemon's start time in clock ticks after boot (field 22 of
    /// /proc/PID/stat): `reload` signals `pid` only while the process with
    /// that pid started then. Filled in by [`write`]; 0 in older files.
    #[serde(default)]
    pub start_ticks: u64,
    /// The tails (conditional rules' chains) the kernel holds, by number:
    /// their rules' indices. Numbers follow the order tails appeared in, so
    /// `print --diff` needs them to compare the kernel's classes with a
    /// fresh build's by meaning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tails: Vec<Vec<u32>>,
}

/// Where the state file lives outside systemd, created by the daemon.
const DEFAULT_DIR: &str = "/run/cgtproxy";

/// The mode [`DEFAULT_DIR`] is created with: only root writes in it; others
/// may read the state file in it (`status` as a normal user; it holds no
/// secret).
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// The largest state file or journal read (the guard's findings make the
/// state file grow with the number of listeners).
pub const MAX_READ: u64 = 4 << 20;

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("CGTPROXY_STATE") {
        return PathBuf::from(p);
    }
    crate::config::systemd_directory("RUNTIME_DIRECTORY")
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
        .join("state.json")
}

/// Is `dir` one the daemon owns, whose owner and mode are checked: the
/// default directory and systemd's `$RUNTIME_DIRECTORY` (not the directory
/// of a `$CGTPROXY_STATE`, which is the user's).
fn owned_dir(dir: &Path) -> bool {
    std::env::var_os("CGTPROXY_STATE").is_none()
        && (dir == Path::new(DEFAULT_DIR)
            || crate::config::systemd_directory("RUNTIME_DIRECTORY").as_deref() == Some(dir))
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}: refused", path.display()))
}

/// Check the directory a state file goes in: not a symbolic link, a
/// directory, and when `owned` (the daemon's own directories, see
/// [`owned_dir`]) owned by root or by us and writable by no one else.
fn check_dir_as(dir: &Path, owned: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refused(dir, "the state directory is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refused(dir, "the state directory is not a directory"));
    }
    if owned {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(refused(
                dir,
                &format!("the state directory is owned by uid {}, neither root nor us", meta.uid()),
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refused(
                dir,
                &format!("the state directory has mode {:o}: writable by others", meta.mode() & 0o7777),
            ));
        }
    }
    Ok(())
}

/// Create `dir` if missing (the default one with [`DEFAULT_DIR_MODE`]
/// whatever the umask), then [`check_dir_as`] it.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    ensure_dir_as(dir, dir == Path::new(DEFAULT_DIR), owned_dir(dir))
}

/// [`ensure_dir`] with the decisions made: create `dir` alone with
/// [`DEFAULT_DIR_MODE`] (`default`), check owner and mode (`owned`).
fn ensure_dir_as(dir: &Path, default: bool, owned: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if default {
                match std::fs::DirBuilder::new().mode(DEFAULT_DIR_MODE).create(dir) {
                    Ok(()) => std::fs::set_permissions(dir, PermissionsExt::from_mode(DEFAULT_DIR_MODE))?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            } else {
                std::fs::create_dir_all(dir)?;
            }
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    check_dir_as(dir, owned)
}

/// Write `bytes` to `path` with `mode` without following a symbolic link:
/// the directory is checked, a temporary file beside `path` is created with
/// `O_NOFOLLOW|O_CREAT|O_EXCL` (a stale one is unlinked first, never
/// followed), then renamed over `path`. A symlinked `path` is refused.
fn write_safely(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_dir(dir)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refused(path, "it is a symbolic link"));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a crash, or planted: unlink (never follows) and retry
            // once; a second loser is an error.
            std::fs::remove_file(&tmp)?;
            create()?
        }
        r => r?,
    };
    let written = file
        .write_all(bytes)
        // The mode whatever the umask (the unit's UMask=0077).
        .and_then(|()| file.set_permissions(PermissionsExt::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Write a file only its owner reads (0600) beside the state file, as
/// [`write`] does: no symbolic link followed, temporary file then rename.
/// For the sysctl journal (`state.sysctls`).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_safely(path, bytes, 0o600)
}

/// Read a file beside the state file: neither it nor its directory a
/// symbolic link (refused), opened `O_NOFOLLOW`, a regular file, at most [`MAX_READ`] bytes, UTF-8.
pub fn read_file(path: &Path) -> io::Result<String> {
    // Not a symbolic link; its owner is not checked: under systemd's
    // DynamicUser= the directory is the daemon's user's, and a reader's
    // (`status`, `reload`) trust does not rest on it (reload verifies the
    // process it signals).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_dir_as(dir, false)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { refused(path, "it is a symbolic link") } else { e })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    read_bounded(file, MAX_READ).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// At most `limit` bytes of `file` as UTF-8; more is an error.
fn read_bounded(file: File, limit: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write the state file (temporary file, then rename; see [`write_private`]).
/// When it describes this process and has no start time, this process's
/// start time is recorded, so the daemon needs not know about it.
pub fn write(state: &DaemonState) -> io::Result<()> {
    let mut state = state.clone();
    if state.pid == std::process::id() && state.start_ticks == 0 {
        state.start_ticks = own_start_time().unwrap_or(0);
    }
    let text = serde_json::to_string_pretty(&state).map_err(io::Error::other)?;
    // Readable by everyone (`status` as a normal user): it holds no secret.
    write_safely(&path(), text.as_bytes(), 0o644)
}

/// The state file's content, or why it cannot be had.
fn load() -> io::Result<DaemonState> {
    let text = read_file(&path())?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The state of the running daemon, if its file exists and its process lives.
pub fn read() -> Option<DaemonState> {
    let state = load().ok()?;
    std::path::Path::new(&format!("/proc/{}", state.pid)).exists().then_some(state)
}

/// Why the state file exists but cannot be read (a message), if so.
pub fn unreadable() -> Option<String> {
    let path = path();
    match read_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            let msg = e.to_string();
            Some(if msg.contains(&path.display().to_string()) { msg } else { format!("{}: {msg}", path.display()) })
        }
        _ => None,
    }
}

/// Remove the state file, and /run/cgtproxy when that is now empty (a
/// manual run created it; systemd's RuntimeDirectory= goes anyway). The
/// directory of a `$CGTPROXY_STATE` is the user's, and stays. Unlinking
/// follows no symbolic link.
pub fn remove() {
    let path = path();
    let _ = std::fs::remove_file(&path);
    if path.parent() == Some(Path::new(DEFAULT_DIR)) {
        let _ = std::fs::remove_dir(DEFAULT_DIR);
    }
}

/// The start time of process `pid` in clock ticks after boot: field 22 of
/// /proc/PID/stat (after the command name in parentheses, which may hold
/// spaces and parentheses itself).
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

/// This process's start time (see [`start_time`]).
pub fn own_start_time() -> io::Result<u64> {
    start_time(std::process::id())
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the command (field 2): field 22 is the 20th of them.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temporary directory, removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("cgtproxy-state-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tmp(dir)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn start_time_is_field_22_after_a_command_with_spaces_and_parens() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_start_time(stat), Some(123456));
        assert_eq!(parse_start_time("42 (x) S 1"), None);
        assert!(own_start_time().unwrap() > 0);
    }

    #[test]
    fn writes_and_reads_without_following_symlinks() {
        let tmp = Tmp::new("links");
        let path = tmp.0.join("state.json");
        write_safely(&path, b"{}", 0o644).unwrap();
        assert_eq!(read_file(&path).unwrap(), "{}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        // A planted temporary file that is a symbolic link: unlinked, the
        // target untouched.
        let target = tmp.0.join("target");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, tmp.0.join("state.json.tmp")).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(read_file(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A symlinked state file: refused for writing and reading.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = write_safely(&path, b"x", 0o644).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("symbolic link"), "{err}");
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        // A symlinked state directory: refused.
        let real = tmp.0.join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.0.join("dir");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = write_safely(&link.join("state.json"), b"x", 0o644).unwrap_err().to_string();
        assert!(
            err.contains(&link.display().to_string()) && err.contains("state directory is a symbolic link"),
            "{err}"
        );
        assert!(std::fs::read_dir(&real).unwrap().next().is_none(), "nothing written through the link");
        let err = read_file(&link.join("state.json")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn reads_only_bounded_regular_files() {
        let tmp = Tmp::new("bounded");
        let fifo = tmp.0.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_file(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let big = tmp.0.join("big");
        std::fs::write(&big, vec![b' '; MAX_READ as usize + 1]).unwrap();
        let err = read_file(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn the_default_directory_is_created_0755_and_checked() {
        let tmp = Tmp::new("dir");
        let dir = tmp.0.join("cgtproxy");
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o077) };
        let made = ensure_dir_as(&dir, true, true);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        made.unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, DEFAULT_DIR_MODE);
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        // Writable by others, or a symbolic link: refused.
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o777)).unwrap();
        let err = ensure_dir_as(&dir, true, true).unwrap_err().to_string();
        assert!(err.contains("writable by others") && err.contains(&dir.display().to_string()), "{err}");
        let link = tmp.0.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_dir_as(&link, true, true).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn older_state_files_still_parse() {
        let old = r#"{"pid": 7, "version": "0.1.0", "config": "c", "cgroup_root": "/", "started": 1,
            "startup_ms": 1.0, "reloads": 0, "resyncs": 0, "cgroups": 0, "elements": 0, "strict": false}"#;
        let s: DaemonState = serde_json::from_str(old).unwrap();
        assert_eq!((s.pid, s.start_ticks), (7, 0));
    }
}
