//! Test fixtures: root check, private network namespaces, test cgroups.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// True when tests that need root can run; otherwise says why they skip.
pub fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        eprintln!("SKIPPED {test}: needs root (CAP_NET_ADMIN, cgroup2 writes); CI runs as root");
        false
    }
}

/// Move the calling thread (each test has its own) into a new, empty network
/// namespace with `lo` up. Children spawned from this thread inherit it, and
/// it vanishes with the thread: nothing is left behind.
pub fn private_netns() {
    // SAFETY: unshare(2) with a valid flag affects only the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    sh("ip link set lo up");
}

/// Run a shell command in the caller's namespaces; panic with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but returns (success, stdout+stderr).
pub fn try_sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    cgtproxy::cgroup::find_cgroup2_mount(&info).expect("cgroup2 is mounted")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A uniquely named cgroup subtree, removed (deepest first) on drop.
pub struct TestCgroups {
    pub root: PathBuf,
    /// The subtree's directory.
    pub dir: PathBuf,
    /// Its path relative to the cgroup2 root, e.g. `/cgtproxy-test-12-0`.
    pub rel: String,
}

impl TestCgroups {
    pub fn new(tag: &str) -> Self {
        let root = cgroup2_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cgtproxy-test-{}-{tag}-{n}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap();
        TestCgroups { root, dir, rel: format!("/{name}") }
    }

    /// Create `sub` (may be nested) below the subtree; returns its directory.
    pub fn mkdir(&self, sub: &str) -> PathBuf {
        let d = self.dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn id(&self, sub: &str) -> u64 {
        cgtproxy::cgroup::id_of(&self.dir.join(sub)).unwrap()
    }
}

/// Remove a cgroup tree deepest first; processes must have left it.
pub fn remove_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            // EBUSY while a killed process is still being reaped.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}
