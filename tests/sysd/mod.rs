//! A real systemd for tests: Debian bookworm's systemd booted as PID 1 by
//! systemd-nspawn, in a network namespace of its own (only `lo`) and a pure
//! cgroup2 tree, so nothing a test does in it touches the host's ruleset,
//! routes or cgroups. The scripts beside this file do the work (usable by
//! hand too: `SYSD_NAME=x tests/sysd/boot.sh`, `run-in.sh`, `stop.sh`);
//! [`Container`] wraps them with a Drop guard that powers the container off
//! and removes its directory and cgroups.
//!
//! Reuse from another test file:
//!
//! ```ignore
//! mod sysd;
//! let Some(c) = sysd::Container::boot("mytest") else { return };  // skips when it cannot run
//! c.install_deb(&sysd::build_deb(&dir, None));
//! c.sh("systemctl enable --now cgtproxy");
//! let (ok, out) = c.user_sh("tester", "cgtproxy status");
//! ```
//!
//! The debootstrapped rootfs (about a minute to build, 216 MB) is kept in
//! $SYSD_CACHE (default /var/tmp/cgtproxy-sysd/cache) and copied for each
//! container, so a test run builds it at most once.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sysd")
}

/// Why a container cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (systemd-nspawn); CI runs as root".into());
    }
    for tool in ["systemd-nspawn", "debootstrap", "nsenter"] {
        let found =
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (apt-get install systemd-container debootstrap; .ci/run does)"
            ));
        }
    }
    None
}

/// A booted container, powered off and removed on drop.
pub struct Container {
    /// Machine name (unique: the test's pid, tag and a counter).
    pub name: String,
    /// Its directory: rootfs copy, pid files, console log.
    pub base: PathBuf,
}

impl Container {
    /// Boot a container, or say why not and return None (the test skips).
    pub fn boot(tag: &str) -> Option<Container> {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED {tag}: {why}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cgtp-{}-{tag}-{n}", std::process::id());
        let base = std::env::var_os("SYSD_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/cgtproxy-sysd"))
            .join(&name);
        let c = Container { name, base };
        let out = c.script("boot.sh").output().expect("run tests/sysd/boot.sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "booting container {}: {text}\nconsole:\n{}", c.name, c.console());
        eprintln!("{}", text.trim());
        Some(c)
    }

    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(scripts().join(name)).env("SYSD_NAME", &self.name).env("SYSD_BASE", &self.base);
        cmd
    }

    /// The container's root directory as seen from the host: files written
    /// there appear in the container.
    pub fn rootfs(&self) -> PathBuf {
        self.base.join("rootfs")
    }

    /// The host path of `path` inside the container.
    pub fn path(&self, path: &str) -> PathBuf {
        self.rootfs().join(path.trim_start_matches('/'))
    }

    /// Write a file into the container (parents created).
    pub fn write(&self, path: &str, contents: &str) {
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }

    /// The end of the container's console output (for failure messages).
    pub fn console(&self) -> String {
        let text = std::fs::read_to_string(self.base.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.script("run-in.sh").args(args).stdin(Stdio::null()).output().expect("run tests/sysd/run-in.sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Run a shell command as root in the container's namespaces (nsenter:
    /// fast; it runs outside the container's cgroup tree); (success, stdout+stderr).
    pub fn try_sh(&self, cmd: &str) -> (bool, String) {
        self.run(&["--raw", "sh", "-c", cmd])
    }

    /// [`Container::try_sh`] that panics with the output on failure.
    pub fn sh(&self, cmd: &str) -> String {
        let (ok, out) = self.try_sh(cmd);
        assert!(ok, "in container {}: `{cmd}` failed:\n{out}", self.name);
        out
    }

    /// Run a shell command as `user` in a logind session with its user
    /// manager (so `systemd-run --user` works), in a cgroup of the container.
    pub fn user_sh(&self, user: &str, cmd: &str) -> (bool, String) {
        self.run(&["-u", user, "sh", "-c", cmd])
    }

    /// [`Container::user_sh`] in the background; its output comes with
    /// `wait_with_output`.
    pub fn spawn_user(&self, user: &str, cmd: &str) -> Child {
        self.script("run-in.sh")
            .args(["-u", user, "sh", "-c", cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tests/sysd/run-in.sh")
    }

    /// Poll `cmd` (as root) every 100 ms for up to `secs` until it succeeds.
    pub fn wait_sh(&self, secs: u64, cmd: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if self.try_sh(cmd).0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Install a .deb from the host with dpkg; its output.
    pub fn install_deb(&self, deb: &Path) -> String {
        let name = deb.file_name().unwrap().to_str().unwrap();
        std::fs::copy(deb, self.path(&format!("/root/{name}"))).unwrap();
        self.sh(&format!("dpkg -i /root/{name} 2>&1"))
    }

    /// A unit's journal, message text only (`journalctl -o cat`).
    pub fn journal(&self, unit: &str) -> String {
        self.try_sh(&format!("journalctl --no-pager -q -o cat -u {unit}")).1
    }

    /// A unit property (`systemctl show -p NAME --value`).
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show -p {name} --value {unit}")).trim().to_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        match self.script("stop.sh").arg("--clean").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "stopping container {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("stopping container {}: {e}", self.name),
        }
    }
}

/// Build the .deb with misc/debian/mkdeb (as `make deb` does) from the
/// binary under test, into `out`; its path. `version` overrides the
/// changelog's (an upgrade test builds a higher one).
pub fn build_deb(out: &Path, version: Option<&str>) -> PathBuf {
    let gendir = out.join("gen");
    let run = |cmd: &mut Command| {
        let o = cmd.output().expect("spawn");
        assert!(
            o.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    run(Command::new(env!("CARGO_BIN_EXE_cgtproxy-gen")).arg(&gendir));
    let mut mkdeb = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/debian/mkdeb"));
    mkdeb.arg("-b").arg(env!("CARGO_BIN_EXE_cgtproxy")).arg("-g").arg(&gendir).arg("-o").arg(out);
    if let Some(v) = version {
        mkdeb.args(["-v", v]);
    }
    PathBuf::from(run(&mut mkdeb))
}

/// Whether the tools to build a .deb are here; otherwise says why a test skips.
pub fn can_build_deb(test: &str) -> bool {
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip"] {
        let found =
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED {test}: {tool} is not installed (apt-get install dpkg-dev binutils; .ci/run does)");
            return false;
        }
    }
    true
}
