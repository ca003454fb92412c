//! What a rule or gateway entry does with traffic, and the tproxies it
//! may name.

use std::net::Ipv4Addr;

use regex::Regex;

use super::publish::NftSetRef;

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
    /// Line and column of its `match` pattern, for `check`'s warnings.
    pub at: (u64, u64),
    /// The pattern as written (Go syntax).
    pub pattern: String,
    pub regex: Regex,
    pub target: Target,
    /// The user's sets that get the ids of the cgroups this rule classifies.
    pub nft_sets: Vec<NftSetRef>,
    /// `protocol`, `port`, `family`, `destination`: which packets of its
    /// cgroups the rule takes (None: all of them).
    pub conditions: Option<super::condition::Conditions>,
}

/// An entry of `proxy-cgroups`: cgroups the config trusts to run a TPROXY
/// server, whose listeners on a tproxy port keep them direct even when the
/// kernel does not say that the socket is transparent.
#[derive(Debug, Clone)]
pub struct ProxyCgroup {
    /// Position in `proxy-cgroups`, from 0.
    pub index: usize,
    /// Line and column of the pattern in the file.
    pub at: (u64, u64),
    /// The pattern as written (Go syntax).
    pub pattern: String,
    pub regex: Regex,
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
    /// `other-protocols: direct`: traffic the proxy cannot carry (neither
    /// TCP nor UDP: ICMP, raw sockets, SCTP...) leaves directly; by default
    /// (`drop`) it is dropped, so a proxied app never shows its address.
    pub other_direct: bool,
}
