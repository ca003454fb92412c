//! `cgtproxy reload`: ask the running daemon to re-read its config.
//!
//! The pid comes from the state file, which may be stale (a SIGKILL leaves
//! it behind and the pid is reused) or not the daemon's at all: the process
//! is verified before it is signalled. A pidfd is opened first, then the
//! process must run a cgtproxy binary and have started when the state file
//! says the daemon started (field 22 of /proc/PID/stat); the signal goes
//! through the pidfd, so it reaches that very process even if the pid is
//! reused meanwhile.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::state::{self, DaemonState};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no running daemon found (state file {0})")]
    NotRunning(String),
    #[error("the state file {file} names pid {pid}, which is not a cgtproxy daemon ({why}): not signalled")]
    NotDaemon { file: String, pid: u32, why: String },
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Send SIGHUP to the daemon the state file names; returns its pid.
pub fn run() -> Result<u32, ReloadError> {
    let file = state::path().display().to_string();
    let s = match state::read_file(&state::path()) {
        Ok(text) => serde_json::from_str::<DaemonState>(&text).map_err(|e| ReloadError::NotDaemon {
            file: file.clone(),
            pid: 0,
            why: format!("unparsable: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReloadError::NotRunning(file)),
        Err(e) => return Err(ReloadError::NotRunning(format!("{file}: {e}"))),
    };
    signal(&s, &file, libc::SIGHUP)?;
    Ok(s.pid)
}

/// Send `sig` to the process `s` names if it is the daemon that wrote `s`.
pub fn signal(s: &DaemonState, file: &str, sig: i32) -> Result<(), ReloadError> {
    let not_daemon = |why: String| ReloadError::NotDaemon { file: file.to_owned(), pid: s.pid, why };
    let pid = match i32::try_from(s.pid) {
        Ok(p) if p > 0 => p,
        _ => return Err(not_daemon("not a valid pid".into())),
    };
    // SAFETY: pidfd_open(pid, flags) takes two integers and returns a new
    // file descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor; we own it alone.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    } else {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => return Err(not_daemon("no such process".into())),
            // Kernels before 5.3: verify, then kill (a small window remains).
            Some(libc::ENOSYS) => None,
            _ => return Err(ReloadError::Signal { pid: s.pid, source: e }),
        }
    };
    verify(s).map_err(not_daemon)?;
    let sent = match &pidfd {
        // SAFETY: pidfd_send_signal(fd, sig, NULL, 0): a valid descriptor we
        // own, a null siginfo (the kernel fills it as kill does).
        Some(fd) => unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
        },
        // SAFETY: kill takes two integers; no memory is passed.
        None => libc::c_long::from(unsafe { libc::kill(pid, sig) }),
    };
    if sent != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Err(not_daemon("it exited".into()));
        }
        return Err(ReloadError::Signal { pid: s.pid, source: e });
    }
    Ok(())
}

/// Why process `s.pid` is not the daemon that wrote `s`, if it is not: it
/// must have started when `s` records and run a cgtproxy binary.
pub fn verify(s: &DaemonState) -> Result<(), String> {
    let started = state::start_time(s.pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such process".to_owned(),
        _ => format!("cannot read /proc/{}/stat: {e}", s.pid),
    })?;
    if s.start_ticks == 0 {
        return Err("the state file records no start time (written by an older cgtproxy); \
                    signal it yourself if it is the daemon"
            .into());
    }
    if started != s.start_ticks {
        return Err(format!("it started at tick {started}, the daemon at tick {}", s.start_ticks));
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", s.pid))
        .map_err(|e| format!("cannot read /proc/{}/exe: {e}", s.pid))?;
    if !is_cgtproxy(&exe) && !same_file(&format!("/proc/{}/exe", s.pid), "/proc/self/exe") {
        return Err(format!("it runs {}", exe.display()));
    }
    Ok(())
}

/// Is `exe` (a /proc/PID/exe link's target) a cgtproxy binary by name, also
/// once replaced by an upgrade ("… (deleted)")? (The other test: the same
/// file as this process's executable.) What the state file records is not
/// trusted here: it could name anything.
fn is_cgtproxy(exe: &Path) -> bool {
    let text = exe.to_string_lossy();
    let text = text.strip_suffix(" (deleted)").unwrap_or(&text);
    Path::new(text).file_name().is_some_and(|n| n == "cgtproxy")
}

fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What `reload` prints when the signal was sent.
pub fn render(pid: u32) -> String {
    format!("reload requested (pid {pid}); see the daemon's log for the result\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_state(child: &std::process::Child) -> DaemonState {
        DaemonState { pid: child.id(), start_ticks: state::start_time(child.id()).unwrap(), ..Default::default() }
    }

    /// Run by [`the_verified_process_is_signalled`] in a child: a process
    /// of this very executable that lives until signalled.
    #[test]
    #[ignore = "a helper process, run by the_verified_process_is_signalled"]
    fn sleeper() {
        std::thread::sleep(std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_live_process_that_is_not_cgtproxy_is_not_signalled() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Its real start time, but not a cgtproxy binary.
        let s = child_state(&child);
        let err = signal(&s, "/x/state.json", libc::SIGHUP).unwrap_err().to_string();
        assert!(err.contains(&format!("names pid {}, which is not a cgtproxy daemon", child.id())), "{err}");
        assert!(err.contains("it runs") && err.contains("not signalled"), "{err}");
        // A wrong start time (a reused pid).
        let mut s = child_state(&child);
        s.start_ticks += 1;
        let err = signal(&s, "/x/state.json", libc::SIGHUP).unwrap_err().to_string();
        assert!(err.contains("it started at tick"), "{err}");
        // An older state file without a start time.
        s.start_ticks = 0;
        let err = signal(&s, "/x/state.json", libc::SIGHUP).unwrap_err().to_string();
        assert!(err.contains("no start time"), "{err}");
        assert!(child.try_wait().unwrap().is_none(), "the child was not signalled");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_dead_pid_is_refused() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let s = DaemonState { pid: child.id(), start_ticks: 1, ..Default::default() };
        child.wait().unwrap();
        let err = signal(&s, "/x/state.json", libc::SIGHUP).unwrap_err().to_string();
        assert!(err.contains("no such process") && err.contains("not signalled"), "{err}");
        let s = DaemonState { pid: 0, ..Default::default() };
        assert!(signal(&s, "f", libc::SIGHUP).unwrap_err().to_string().contains("not a valid pid"));
        let s = DaemonState { pid: u32::MAX, ..Default::default() };
        assert!(signal(&s, "f", libc::SIGHUP).unwrap_err().to_string().contains("not a valid pid"));
    }

    #[test]
    fn the_verified_process_is_signalled() {
        // The same executable as ours stands for "a cgtproxy binary" here.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "cmd::reload::tests::sleeper", "--quiet"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = child_state(&child);
        signal(&s, "/x/state.json", libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn cgtproxy_binaries() {
        assert!(is_cgtproxy(Path::new("/usr/bin/cgtproxy")));
        assert!(is_cgtproxy(Path::new("/usr/bin/cgtproxy (deleted)")));
        assert!(!is_cgtproxy(Path::new("/usr/bin/sleep")));
        assert!(!is_cgtproxy(Path::new("/usr/bin/cgtproxy-evil")));
        assert!(same_file("/proc/self/exe", "/proc/self/exe"));
    }
}
