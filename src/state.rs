//! The daemon's state file: what `status` and `reload` learn about the
//! running daemon. Written atomically at start, reload and resync; removed
//! on exit. `$CGTPROXY_STATE`, else `$RUNTIME_DIRECTORY/state.json` (systemd's
//! `RuntimeDirectory=`), else `/run/cgtproxy/state.json`.

use std::io;
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
    /// The table and routing stay when the daemon stops (fail closed).
    #[serde(default)]
    pub keep_on_exit: bool,
    /// Set while an error keeps the daemon from following the tree; the
    /// last good kernel state stays in force.
    #[serde(default)]
    pub degraded: Option<String>,
}

/// Where the state file lives outside systemd, created by the daemon.
const DEFAULT_DIR: &str = "/run/cgtproxy";

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("CGTPROXY_STATE") {
        return PathBuf::from(p);
    }
    crate::config::systemd_directory("RUNTIME_DIRECTORY")
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
        .join("state.json")
}

/// Write the state file (temporary file, then rename).
pub fn write(state: &DaemonState) -> io::Result<()> {
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
    std::fs::write(&tmp, text)?;
    // Readable by everyone (`status` as a normal user), whatever the umask
    // (the unit's UMask=0077): it holds no secret.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)
}

/// The state of the running daemon, if its file exists and its process lives.
pub fn read() -> Option<DaemonState> {
    let text = std::fs::read_to_string(path()).ok()?;
    let state: DaemonState = serde_json::from_str(&text).ok()?;
    std::path::Path::new(&format!("/proc/{}", state.pid)).exists().then_some(state)
}

/// Why the state file exists but cannot be read (a message), if so.
pub fn unreadable() -> Option<String> {
    let path = path();
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Some(format!("{}: {e}", path.display())),
        _ => None,
    }
}

/// Remove the state file, and /run/cgtproxy when that is now empty (a
/// manual run created it; systemd's RuntimeDirectory= goes anyway). The
/// directory of a `$CGTPROXY_STATE` is the user's, and stays.
pub fn remove() {
    let path = path();
    let _ = std::fs::remove_file(&path);
    if path.parent() == Some(Path::new(DEFAULT_DIR)) {
        let _ = std::fs::remove_dir(DEFAULT_DIR);
    }
}
