//! `gateway:`: what happens to traffic this host forwards (containers, VMs,
//! LAN clients, VPN peers), by input interface and source address.
//!
//! ```yaml
//! gateway:
//!   - interface: "br-*"          # a trailing * matches a prefix
//!     tproxy: mihomo
//!   - source: [192.168.50.0/24, "fd00:50::/64"]
//!     direct: true
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::cidr::Cidr;
use super::ctx::{Ctx, one_target};
use super::error::ConfigError;
use super::limits::clip;
use super::target::{Target, Tproxy};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    interface: Option<Spanned<String>>,
    source: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    direct: bool,
    #[serde(default)]
    drop: bool,
    tproxy: Option<Spanned<String>>,
}

/// An input interface: an exact name, or a prefix (`br-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iface {
    Exact(String),
    Prefix(String),
}

impl Iface {
    /// Does an interface called `name` match?
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Iface::Exact(n) => n == name,
            Iface::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// The bytes `iifname`/`meta ibrname` compares: a prefix without its
    /// terminating NUL, an exact name padded to IFNAMSIZ (as `nft` does).
    pub fn cmp_bytes(&self) -> Vec<u8> {
        match self {
            Iface::Prefix(p) => p.as_bytes().to_vec(),
            Iface::Exact(n) => {
                let mut b = n.as_bytes().to_vec();
                b.resize(IFNAME_MAX + 1, 0);
                b
            }
        }
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Iface::Exact(n) => write!(f, "\"{n}\""),
            Iface::Prefix(p) => write!(f, "\"{p}*\""),
        }
    }
}

/// One entry of `gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEntry {
    /// Position in `gateway`, from 0.
    pub index: usize,
    /// Line in the file, for messages.
    pub line: u64,
    pub interface: Option<Iface>,
    /// Source prefixes; empty means any source.
    pub source: Vec<Cidr>,
    pub target: Target,
}

impl GatewayEntry {
    pub fn source4(&self) -> Vec<Cidr> {
        self.source.iter().filter(|c| c.addr.is_ipv4()).copied().collect()
    }

    pub fn source6(&self) -> Vec<Cidr> {
        self.source.iter().filter(|c| c.addr.is_ipv6()).copied().collect()
    }

    /// Does a packet from `from` arriving on `iif` match? (`explain`)
    pub fn matches(&self, from: IpAddr, iif: Option<&str>) -> bool {
        let iface_ok = match (&self.interface, iif) {
            (None, _) => true,
            (Some(i), Some(name)) => i.matches(name),
            (Some(_), None) => false,
        };
        let source_ok = self.source.is_empty() || self.source.iter().any(|c| c.contains(from));
        iface_ok && source_ok
    }

    /// `interface "br-*", source [..]` as people read it.
    pub fn conditions(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.interface {
            parts.push(format!("interface {i}"));
        }
        if !self.source.is_empty() {
            let s: Vec<String> = self.source.iter().map(ToString::to_string).collect();
            parts.push(format!("source [{}]", s.join(", ")));
        }
        parts.join(", ")
    }
}

/// `interface "br-*", source [..] -> tproxy mihomo`: the one way an entry
/// is described in words.
impl std::fmt::Display for GatewayEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.conditions(), self.target)
    }
}

/// Check an interface name as written: at most 15 bytes, none of the
/// characters the kernel refuses, `*` only at the end.
fn parse_iface(text: &str) -> Result<Iface, String> {
    let (name, prefix) = match text.strip_suffix('*') {
        Some(p) => (p, true),
        None => (text, false),
    };
    if name.is_empty() {
        return Err(if prefix {
            "interface \"*\" matches every interface; leave `interface` out and use `source` instead".into()
        } else {
            "interface is empty".into()
        });
    }
    if name.len() > IFNAME_MAX {
        return Err(format!("interface {:?} is longer than {IFNAME_MAX} bytes, the kernel's limit", clip(text)));
    }
    if let Some(c) = name.chars().find(|c| *c == '*' || *c == '/' || *c == ':' || c.is_whitespace()) {
        let why = if c == '*' { "`*` is only allowed at the end (a prefix)" } else { "no interface name has it" };
        return Err(format!("interface {text:?} cannot match: it contains {c:?} ({why})"));
    }
    if !prefix && (name == "." || name == "..") {
        return Err(format!("interface {text:?} is not a valid interface name"));
    }
    Ok(if prefix { Iface::Prefix(name.to_owned()) } else { Iface::Exact(name.to_owned()) })
}

pub(super) fn parse(
    ctx: &Ctx,
    raw: &[Spanned<RawEntry>],
    tproxies: &BTreeMap<String, Tproxy>,
    sets: &BTreeMap<String, super::sets::NamedSet>,
) -> Result<Vec<GatewayEntry>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (index, e) in raw.iter().enumerate() {
        let what = format!("gateway[{index}]");
        let here = |m: String| ctx.at(e, format!("{what}: {m}"));
        let interface = match &e.value.interface {
            None => None,
            Some(i) => Some(parse_iface(&i.value).map_err(|m| ctx.at(i, format!("{what}: {m}")))?),
        };
        let mut source = Vec::new();
        if let Some(list) = &e.value.source {
            if list.value.is_empty() {
                return Err(ctx.at(list, format!("{what}: `source` is empty; give addresses or leave it out")));
            }
            for (i, s) in list.value.iter().enumerate() {
                if let Some(name) = s.value.trim().strip_prefix('@') {
                    // A static named set: its CIDRs. A dynamic one cannot be
                    // used here: the bridge table (brouting) cannot see the
                    // inet table's sets.
                    match sets.get(name) {
                        Some(super::sets::NamedSet::Static(list)) => source.extend(list.iter().copied()),
                        Some(super::sets::NamedSet::Dynamic) => {
                            return Err(ctx.at(
                                s,
                                format!(
                                    "{what}.source[{i}]: set {:?} is dynamic; gateway entries take static sets only",
                                    clip(name)
                                ),
                            ));
                        }
                        None => {
                            let known: Vec<&str> = sets.keys().map(String::as_str).collect();
                            return Err(ctx.at(
                                s,
                                format!(
                                    "{what}.source[{i}]: no set {:?} in `sets` (known: {})",
                                    clip(name),
                                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                                ),
                            ));
                        }
                    }
                    continue;
                }
                let cidr = Cidr::parse(&s.value).map_err(|m| ctx.at(s, format!("{what}.source[{i}]: {m}")))?;
                source.push(cidr);
            }
        }
        if interface.is_none() && source.is_empty() {
            return Err(here("no condition: give `interface`, `source` or both".into()));
        }
        let target = one_target(ctx, &what, e.value.direct, e.value.drop, None, e.value.tproxy.as_ref(), tproxies)?
            .map_err(here)?;
        out.push(GatewayEntry { index, line: e.referenced.line(), interface, source, target });
    }
    Ok(out)
}
