//! How the daemon is started: its options and where its configuration
//! comes from (read again on reload).

use std::path::PathBuf;

use tracing::warn;

use crate::config::{Config, ConfigError};

/// What the daemon does when it is told to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Leave the table and routing in place on SIGTERM/SIGINT (fail closed
    /// across a restart: the next instance replaces them atomically).
    /// `cgtproxy cleanup` removes them; the systemd unit runs it when the
    /// service is really stopping.
    pub keep_on_exit: bool,
}

/// Where the configuration comes from, for start and reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Given with -c: a missing file is an error, not the built-in default.
    pub explicit: bool,
}

impl ConfigSource {
    /// Load the config; a missing default file means the built-in default.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match Config::load(&self.path) {
            Err(ConfigError::Read { source, .. })
                if !self.explicit && source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn!(path = %self.path.display(), "config file {} not found; using the built-in default (everything direct)", self.path.display());
                Ok(Config::builtin_default())
            }
            other => other,
        }
    }
}
