//! The YAML configuration: parsing, defaults and validation.
//!
//! The file format is the Go implementation's (`version: 1`, `cgroup-root`,
//! `route-table`, `bypass`, `tproxies`, `rules`). Parsing is pure: nothing here
//! touches the kernel or the cgroup filesystem, so every error is unit-tested.

mod cidr;
pub mod gateway;
mod raw;
pub mod regex_compat;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use crate::cgroup::CgroupRoot;
pub use cidr::Cidr;
pub use gateway::{GatewayEntry, Iface};
use regex::Regex;

/// Where the config lives when `-c` is not given.
pub const DEFAULT_PATH: &str = "/etc/cgtproxy/config.yaml";
/// Table number used when `route-table` is not set.
pub const DEFAULT_ROUTE_TABLE: u32 = 300;
/// Deepest cgroup level watched for unknown cgroups in strict mode by default.
pub const DEFAULT_STRICT_DEPTH: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Syntax { file: String, message: String },
    #[error("config file {file}, line {line} column {column}: {message}")]
    Invalid { file: String, line: u64, column: u64, message: String },
}

/// What happens to a cgroup's outgoing traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Direct,
    Drop,
    /// Refused at once: TCP reset, ICMP port unreachable for the rest.
    Reject,
    /// The name of an entry of `tproxies`.
    Tproxy(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Direct => f.write_str("direct"),
            Target::Drop => f.write_str("drop"),
            Target::Reject => f.write_str("reject"),
            Target::Tproxy(name) => write!(f, "tproxy {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in `rules`, from 0.
    pub index: usize,
    /// Line of the rule in the file, for messages.
    pub line: u64,
    /// The pattern as written (Go syntax).
    pub pattern: String,
    pub regex: Regex,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHijack {
    pub ip: Ipv4Addr,
    /// Where IPv6 DNS goes; without it IPv6 DNS is not hijacked.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub port: u16,
    pub tcp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tproxy {
    pub name: String,
    pub mark: u32,
    pub port: u16,
    pub no_udp: bool,
    pub no_ipv6: bool,
    pub dns_hijack: Option<DnsHijack>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, or `<built-in default>`.
    pub origin: String,
    pub cgroup_root: CgroupRoot,
    pub route_table: u32,
    pub bypass: Vec<Cidr>,
    /// Sorted by name.
    pub tproxies: BTreeMap<String, Tproxy>,
    pub rules: Vec<Rule>,
    /// Hold packets of cgroups the daemon has not classified yet.
    pub strict: bool,
    /// Deepest level checked for unknown cgroups in strict mode.
    pub strict_depth: u32,
    /// Count packets and bytes per classified cgroup (`cgtproxy status`).
    pub counters: bool,
    /// Forwarded traffic (containers, VMs, LAN clients, VPN peers), first
    /// match wins; empty: forwarded traffic is not touched.
    pub gateway: Vec<GatewayEntry>,
}

impl Config {
    /// The configuration used when no file exists: everything goes direct.
    pub fn builtin_default() -> Self {
        Config {
            origin: "<built-in default>".into(),
            cgroup_root: CgroupRoot::Auto,
            route_table: DEFAULT_ROUTE_TABLE,
            bypass: Vec::new(),
            tproxies: BTreeMap::new(),
            rules: Vec::new(),
            strict: false,
            strict_depth: DEFAULT_STRICT_DEPTH,
            counters: false,
            gateway: Vec::new(),
        }
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        raw::parse(text, origin)
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    /// The first rule whose pattern matches `path`, the path of a cgroup
    /// relative to the cgroup2 root (starting with `/`).
    pub fn classify(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.regex.is_match(path))
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
