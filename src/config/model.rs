//! The validated configuration as a value, with its defaults.

use std::collections::BTreeMap;

use super::cidr::Cidr;
use super::gateway::GatewayEntry;
use super::sets::NamedSet;
use super::target::{ProxyCgroup, Rule, Tproxy};
use crate::cgroup::CgroupRoot;

/// Where the config lives when `-c` is not given.
pub const DEFAULT_PATH: &str = "/etc/cgtproxy/config.yaml";
/// Table number used when `route-table` is not set.
pub const DEFAULT_ROUTE_TABLE: u32 = 300;
/// Deepest cgroup level watched for unknown cgroups in strict mode by default.
pub const DEFAULT_STRICT_DEPTH: u32 = 12;
/// The conntrack mark bits that cache a flow's class by default: the top
/// 12, clear of wg-quick's 0xca6c, Tailscale's 0xff0000 and Kubernetes'
/// 0x4000/0x8000.
pub const DEFAULT_FLOW_MARK_MASK: u32 = 0xfff0_0000;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, or `<built-in default>`.
    pub origin: String,
    pub cgroup_root: CgroupRoot,
    pub route_table: u32,
    pub bypass: Vec<Cidr>,
    /// Dynamic named sets in `bypass` (`@NAME`): destinations others add.
    pub bypass_sets: Vec<String>,
    /// `sets:`, by name (static ones are already merged where referenced).
    pub sets: BTreeMap<String, NamedSet>,
    /// Sorted by name.
    pub tproxies: BTreeMap<String, Tproxy>,
    pub rules: Vec<Rule>,
    /// Hold packets of cgroups the daemon has not classified yet.
    pub strict: bool,
    /// Deepest level checked for unknown cgroups in strict mode.
    pub strict_depth: u32,
    /// Count packets and bytes per classified cgroup (`cgtproxy status`).
    pub counters: bool,
    /// The conntrack mark bits that cache each flow's class (0: no cache,
    /// every packet is classified).
    pub flow_mark_mask: u32,
    /// `drop`/`reject` cover traffic to this host too (loopback, the
    /// host's own addresses), `bypass` or not; DNS (port 53) excepted.
    pub drop_loopback: bool,
    /// Forwarded traffic (containers, VMs, LAN clients, VPN peers), first
    /// match wins; empty: forwarded traffic is not touched.
    pub gateway: Vec<GatewayEntry>,
    /// Kernels that cannot broute: may the daemon set
    /// net.bridge.bridge-nf-call-iptables/ip6tables to 0 (for every bridge
    /// of the namespace) so TPROXY of bridged clients works?
    pub gateway_bridge_netfilter_off: bool,
    /// Cgroups trusted to run a TPROXY server (the proxy-loop guard keeps
    /// them direct while they listen on a tproxy port).
    pub proxy_cgroups: Vec<ProxyCgroup>,
}

impl Config {
    /// The configuration used when no file exists: everything goes direct.
    pub fn builtin_default() -> Self {
        Config {
            origin: "<built-in default>".into(),
            cgroup_root: CgroupRoot::Auto,
            route_table: DEFAULT_ROUTE_TABLE,
            bypass: Vec::new(),
            bypass_sets: Vec::new(),
            sets: BTreeMap::new(),
            tproxies: BTreeMap::new(),
            rules: Vec::new(),
            strict: false,
            strict_depth: DEFAULT_STRICT_DEPTH,
            counters: false,
            flow_mark_mask: DEFAULT_FLOW_MARK_MASK,
            drop_loopback: false,
            gateway: Vec::new(),
            gateway_bridge_netfilter_off: false,
            proxy_cgroups: Vec::new(),
        }
    }

    /// The first rule whose pattern matches `path`, the path of a cgroup
    /// relative to the cgroup2 root (starting with `/`).
    pub fn classify(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.regex.is_match(path))
    }

    /// The first `proxy-cgroups` entry that matches `path`.
    pub fn proxy_cgroup(&self, path: &str) -> Option<&ProxyCgroup> {
        self.proxy_cgroups.iter().find(|p| p.regex.is_match(path))
    }
}
