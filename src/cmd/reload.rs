//! `cgtproxy reload`: ask the running daemon to re-read its config.

use crate::state;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no running daemon found (state file {0})")]
    NotRunning(String),
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Send SIGHUP to the daemon the state file names; returns its pid.
pub fn run() -> Result<u32, ReloadError> {
    let Some(s) = state::read() else {
        return Err(ReloadError::NotRunning(state::path().display().to_string()));
    };
    // SAFETY: sending SIGHUP to a pid we read; kill has no memory effects.
    if unsafe { libc::kill(s.pid as i32, libc::SIGHUP) } != 0 {
        return Err(ReloadError::Signal { pid: s.pid, source: std::io::Error::last_os_error() });
    }
    Ok(s.pid)
}

/// What `reload` prints when the signal was sent.
pub fn render(pid: u32) -> String {
    format!("reload requested (pid {pid}); see the daemon's log for the result\n")
}
