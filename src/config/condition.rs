//! A rule's conditions as a value: which packets of its cgroups it takes
//! (`conditions.rs` parses and validates them).

use super::cidr::Cidr;

/// A protocol a condition names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    /// As `nft` lists it.
    pub fn nft_name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "ipv6-icmp",
        }
    }

    /// As the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Icmpv6 => "icmpv6",
            p => p.nft_name(),
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// `ipv4` or `ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

/// A rule's conditions, validated. Every list is non-empty when given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conditions {
    /// Sorted by protocol number; empty: any protocol. `port` without
    /// `protocol` means TCP and UDP.
    pub protocols: Vec<Proto>,
    /// Destination port ranges (inclusive), sorted; empty: any port.
    pub ports: Vec<(u16, u16)>,
    pub family: Option<Family>,
    /// CIDRs (static sets expanded) and dynamic sets by name; None: any
    /// destination.
    pub destination: Option<Destination>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub cidrs: Vec<Cidr>,
    /// Dynamic named sets (their IPv4 set NAME and IPv6 set NAME6).
    pub sets: Vec<String>,
}

impl Conditions {
    /// What the conditions say, as a person reads it: `udp dport 443`,
    /// `ipv6`, `tcp daddr {@lan, 192.0.2.0/24}`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.family {
            parts.push(if f == Family::V4 { "ipv4".to_owned() } else { "ipv6".to_owned() });
        }
        if !self.protocols.is_empty() {
            parts.push(self.protocols.iter().map(|p| p.name()).collect::<Vec<_>>().join("/"));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> =
                self.ports.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
            parts.push(format!("dport {}", ports.join(",")));
        }
        if let Some(d) = &self.destination {
            let mut items: Vec<String> = d.sets.iter().map(|s| format!("@{s}")).collect();
            items.extend(d.cidrs.iter().map(ToString::to_string));
            parts.push(format!("to {}", items.join(",")));
        }
        parts.join(" ")
    }
}
