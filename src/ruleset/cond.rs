//! One packet match of a conditional rule, as the kernel sees it: a
//! destination (one family), protocols, destination ports. A rule's
//! conditions become one or more of these (one per family and set of its
//! destination), tried in order in its tail chain.

use super::verdict::Interval;

/// Where a packet goes, for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `ip daddr { ... }` (merged ranges).
    Ranges(Vec<Interval>),
    /// `ip daddr @NAME` / `ip6 daddr @NAME6` (a dynamic named set).
    Set(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondMatch {
    /// `(v6, where)`; it implies the family.
    pub dest: Option<(bool, Dest)>,
    /// `meta nfproto ipv4|ipv6` (Some(v6)) when no destination or
    /// protocol implies it.
    pub family: Option<bool>,
    /// IP protocol numbers, sorted; empty: any.
    pub protos: Vec<u8>,
    /// Destination port ranges; only with TCP and/or UDP.
    pub ports: Vec<(u16, u16)>,
}

/// The name `nft` lists for an IP protocol number of a condition.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        _ => "?",
    }
}
