//! Test fixtures: root check, private network namespaces, test cgroups,
//! daemons started in them; shared by the tests and the benches (which
//! include this file with `#[path]`).
#![allow(dead_code)]

pub mod hostile;
mod nl;
// Not every test uses the notifications.
#[allow(unused_imports)]
pub use nl::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The cgtproxy binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cgtproxy")
}

/// Poll `cond` every 20 ms for up to `secs`; whether it became true.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

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
    assert!(out.status.success(), "`{cmd}` failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
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
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

/// A named network namespace (`ip netns add`), deleted on drop. Processes
/// enter it with `nsenter --net=/run/netns/NAME`, which keeps the mount
/// namespace (`ip netns exec` would remount /sys and hide cgroup2).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cgtp-{}-{tag}-{n}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = NetNs { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// `nsenter --net=... ` prefix for commands in this namespace.
    pub fn enter(&self) -> String {
        format!("nsenter --net=/run/netns/{}", self.name)
    }

    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("{} sh -c {}", self.enter(), shell_quote(cmd)))
    }

    pub fn try_sh(&self, cmd: &str) -> (bool, String) {
        try_sh(&format!("{} sh -c {}", self.enter(), shell_quote(cmd)))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A background process, killed on drop; its stdout lines are collected.
pub struct Proc {
    pub child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Spawn `sh -c CMD`; stdout and stderr are both collected as lines.
    pub fn spawn(cmd: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd} 2>&1"))
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc { child, lines, rx }
    }

    /// Wait up to `secs` for a line containing `needle`; panics with the
    /// output so far otherwise.
    pub fn wait_for(&self, needle: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {needle:?} within {secs}s; output:\n{}", self.output()),
            }
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "process did not stop:\n{}", self.output());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn helper() -> String {
    format!("python3 {}/tests/nethelper.py", env!("CARGO_MANIFEST_DIR"))
}

/// Two test hosts joined by a veth pair:
/// - `local` (where cgtproxy runs): 192.0.2.1/24, 2001:db8::1/64, default
///   routes via the remote;
/// - `remote`: 192.0.2.2/24, 2001:db8::2/64, plus 198.51.100.2 and
///   2001:db8:100::2 on its loopback (addresses behind a router, as the
///   internet is), serving TCP/UDP on 8080 and 9999.
pub struct Testbed {
    pub local: NetNs,
    pub remote: NetNs,
    pub server: Proc,
}

pub const REMOTE4: &str = "198.51.100.2";
pub const REMOTE6: &str = "2001:db8:100::2";

impl Testbed {
    pub fn new(tag: &str) -> Self {
        let local = NetNs::new(&format!("{tag}l"));
        let remote = NetNs::new(&format!("{tag}r"));
        sh(&format!(
            // Both ends are born in their namespaces: nothing appears in the
            // machine's own namespace, and parallel tests cannot collide.
            "ip link add vl netns {} type veth peer name vr netns {}",
            local.name, remote.name
        ));
        local.sh("ip link set vl up && ip addr add 192.0.2.1/24 dev vl && ip -6 addr add 2001:db8::1/64 dev vl nodad \
             && ip route add default via 192.0.2.2 && ip -6 route add default via 2001:db8::2");
        remote.sh(&format!(
            "ip link set vr up && ip addr add 192.0.2.2/24 dev vr && ip -6 addr add 2001:db8::2/64 dev vr nodad \
             && ip addr add {REMOTE4}/32 dev lo && ip -6 addr add {REMOTE6}/128 dev lo nodad \
             && nft 'add table inet count; add chain inet count in {{ type filter hook prerouting priority 0; }}; \
                     add rule inet count in ip saddr 192.0.2.1 th dport 9999 counter; \
                     add rule inet count in ip6 saddr 2001:db8::1 th dport 9999 counter'"
        ));
        let server = Proc::spawn(&format!("{} {} serve REMOTE 8080 9999", remote.enter(), helper()));
        server.wait_for("READY", 10);
        Testbed { local, remote, server }
    }

    /// Packets the remote host received on port 9999 (the drop target).
    pub fn packets_at_9999(&self) -> u64 {
        counted_packets(&self.remote)
    }

    /// Run the helper client inside `cgroup_dir` and the local namespace.
    pub fn client(&self, cgroup_dir: &Path, proto: &str, addr: &str, port: u16, token: &str) -> String {
        let cmd = format!(
            "echo $$ > {}/cgroup.procs && exec {} {} client {proto} {addr} {port} {token} 1.5",
            cgroup_dir.display(),
            self.local.enter(),
            helper()
        );
        let out = Command::new("sh").arg("-c").arg(&cmd).output().expect("client");
        let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            text.push_str(&format!(" (client failed: {})", String::from_utf8_lossy(&out.stderr)));
        }
        text
    }
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("cgtproxy-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file removed on drop.
pub struct TempFile(pub PathBuf);

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // A daemon's state file sits beside its config; a SIGKILLed daemon
        // cannot remove it itself.
        if self.0.extension().is_some_and(|e| e == "yaml") {
            let _ = std::fs::remove_file(self.0.with_extension("state.json"));
            let _ = std::fs::remove_file(self.0.with_extension("state.json.tmp"));
        }
    }
}

/// How long a daemon may take to say "ready" before a test calls it hung:
/// under the software-emulated VM of tests/vm (CGTPROXY_TEST_WANT_BROUTE),
/// a debug build on a loaded host has taken 18 s.
pub fn ready_secs() -> u64 {
    if std::env::var_os("CGTPROXY_TEST_WANT_BROUTE").is_some() { 120 } else { 20 }
}

/// Start cgtproxy with `config_text` in `ns`; returns once it is ready.
pub fn start_daemon(ns: &NetNs, config_text: &str) -> (Proc, TempFile) {
    start_daemon_env(ns, config_text, "")
}

/// Like [`start_daemon`], with extra `VAR=value` words for `env`.
pub fn start_daemon_env(ns: &NetNs, config_text: &str, env: &str) -> (Proc, TempFile) {
    let (daemon, config) = spawn_daemon(ns, config_text, &Launch { env, args: "--log-level debug", ..Launch::ours() });
    daemon.wait_for("ready", ready_secs());
    (daemon, config)
}

/// How [`spawn_daemon`] runs a daemon: `env ENV nsenter.. WRAP PROGRAM -c CONFIG ARGS`.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// The binary: ours, or another implementation's.
    pub program: &'a str,
    /// `VAR=value` words for `env`.
    pub env: &'a str,
    /// A command the program runs under, such as `chrt -r 1`.
    pub wrap: &'a str,
    /// Arguments after `-c CONFIG`.
    pub args: &'a str,
}

impl Launch<'_> {
    /// The binary under test, as it is.
    pub fn ours() -> Self {
        Launch { program: bin(), env: "", wrap: "", args: "" }
    }
}

/// Spawn a daemon in `ns` with `config_text` as its config (a temporary
/// file, with the daemon's own state file beside it, not the machine's
/// /run); does not wait for it.
pub fn spawn_daemon(ns: &NetNs, config_text: &str, how: &Launch) -> (Proc, TempFile) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("cgtproxy-test-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, config_text).unwrap();
    let state = path.with_extension("state.json");
    let Launch { program, env, wrap, args } = how;
    let daemon = Proc::spawn(&format!(
        "env {env} CGTPROXY_STATE={} {} {wrap} {program} -c {} {args}",
        state.display(),
        ns.enter(),
        path.display()
    ));
    (daemon, TempFile(path))
}

/// Run our binary with `config_text` in `ns` as nobody without any
/// capability: whether it succeeded, its output, and how long it ran
/// (setpriv and nsenter included).
pub fn start_unprivileged(ns: &NetNs, config_text: &str) -> (bool, String, std::time::Duration) {
    let dir = TempDir::new("noperm");
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, config_text).unwrap();
    sh(&format!("chmod 755 {} && chmod 644 {}", dir.0.display(), path.display()));
    let started = std::time::Instant::now();
    let (ok, out) = ns.try_sh(&format!(
        "{} setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
         env CGTPROXY_STATE={}/state.json {} -c {}",
        ns.enter(),
        dir.0.display(),
        bin(),
        path.display()
    ));
    (ok, out, started.elapsed())
}

/// A private network namespace and a test cgroup subtree, made together:
/// where a test or a bench runs a daemon. On drop the subtree goes first,
/// then the namespace.
pub struct Sandbox {
    pub cg: TestCgroups,
    pub ns: NetNs,
}

impl Sandbox {
    pub fn new(tag: &str) -> Self {
        let ns = NetNs::new(tag);
        Sandbox { cg: TestCgroups::new(tag), ns }
    }

    /// A new sandbox with the calling thread moved into its namespace
    /// ([`enter_netns`]).
    pub fn entered(tag: &str) -> Self {
        let sandbox = Self::new(tag);
        enter_netns(&sandbox.ns);
        sandbox
    }
}

/// The `p` quantile (0 to 1) of ascending `sorted`, nearest rank; NaN when
/// there is nothing.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `v` in ascending order, for [`percentile`].
pub fn ascending(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Nothing of cgtproxy is left in `ns`.
pub fn assert_clean(ns: &NetNs) {
    assert_eq!(ns.sh("nft list ruleset").trim(), "", "nftables not empty after stop");
    for fam in ["-4", "-6"] {
        let rules = ns.sh(&format!("ip {fam} rule show"));
        assert!(!rules.contains("fwmark"), "rules left: {rules}");
    }
    // Whatever table a test used.
    assert_eq!(ns.sh("ip route show table all | grep -c 'local default dev lo' || true").trim(), "0");
    assert_eq!(ns.sh("ip -6 route show table all | grep -c 'local default dev lo' || true").trim(), "0");
}

/// Move the calling thread into `ns` (setns is per thread); children
/// spawned from it afterwards start there too.
pub fn enter_netns(ns: &NetNs) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    // SAFETY: a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Ids of every cgroup below `dir` (not `dir` itself).
pub fn ids_below(root: &Path, dir: &Path) -> std::collections::BTreeSet<u64> {
    let mut found = Vec::new();
    cgtproxy::cgroup::scan_into(root, dir, &mut found).unwrap();
    found
        .into_iter()
        .filter(|c| *c.path != *cgtproxy::cgroup::relative_path(root, dir).unwrap())
        .map(|c| c.id)
        .collect()
}

/// Poll the kernel map (from a thread already in the daemon's namespace)
/// until its keys within `universe` equal `want`; returns the last keys seen.
pub fn wait_map(
    nft: &mut cgtproxy::nft::Nft,
    want: &std::collections::BTreeSet<u64>,
    secs: u64,
) -> std::collections::BTreeSet<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        // The table may be missing for a moment (while it is restored).
        let have: std::collections::BTreeSet<u64> =
            nft.cgroup_map().map(|m| m.into_keys().collect()).unwrap_or_default();
        if &have == want || std::time::Instant::now() > deadline {
            return have;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The sum of the `counter` packets of `ns`'s `inet count in` chain: what a
/// test's remote host received on the port it counts.
pub fn counted_packets(ns: &NetNs) -> u64 {
    ns.sh("nft list chain inet count in")
        .lines()
        .filter_map(|l| l.split("packets ").nth(1))
        .filter_map(|p| p.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
