//! The YAML configuration: parsing, defaults and validation.
//!
//! The file format is the Go implementation's (`version: 1`, `cgroup-root`,
//! `route-table`, `bypass`, `tproxies`, `rules`). Parsing is pure: nothing here
//! touches the kernel or the cgroup filesystem, so every error is unit-tested.

mod cidr;
mod condition;
pub mod conditions;
mod ctx;
mod error;
pub mod gateway;
pub mod limits;
mod model;
pub mod publish;
mod raw;
pub mod regex_compat;
pub mod sets;
mod target;

use std::path::{Path, PathBuf};

pub use crate::cgroup::CgroupRoot;
pub use cidr::Cidr;
pub use condition::{Conditions, Destination, Family, Proto};
pub use error::ConfigError;
pub use gateway::{GatewayEntry, Iface};
pub use model::{Config, DEFAULT_PATH, DEFAULT_ROUTE_TABLE, DEFAULT_STRICT_DEPTH};
pub use publish::NftSetRef;
pub use target::{DnsHijack, ProxyCgroup, Rule, Target, Tproxy};

impl Config {
    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        raw::parse(text, origin)
    }

    /// Read, parse and validate a config file: a regular file of at most
    /// 1 MiB (see [`limits`]; a FIFO or device is refused at once).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = limits::read_config(path)?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// The config file used when `-c` is not given: the first directory of
/// `$CONFIGURATION_DIRECTORY` (set by systemd's `ConfigurationDirectory=`),
/// else /etc/cgtproxy.
pub fn default_path() -> PathBuf {
    systemd_directory("CONFIGURATION_DIRECTORY")
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), |dir| dir.join("config.yaml"))
}

/// The first directory systemd lists in `var` (`$CONFIGURATION_DIRECTORY`,
/// `$RUNTIME_DIRECTORY`: colon-separated), when set and not empty.
pub fn systemd_directory(var: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os(var)?;
    let dirs = dirs.to_string_lossy();
    dirs.split(':').next().filter(|d| !d.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests;
