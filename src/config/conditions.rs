//! Conditions on a rule (`protocol`, `port`, `family`, `destination`):
//! which packets of its cgroups the rule takes. A packet that does not
//! meet them passes on to the later rules matching the same cgroup.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::cidr::Cidr;
pub use super::condition::{Conditions, Destination, Family, Proto};
use super::ctx::Ctx;
use super::error::ConfigError;
use super::limits::clip;
use super::publish::OneOrMany;
use super::sets::NamedSet;

/// A port as written: `443` or `"8000-8100"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

/// `port:` as written: one, or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPorts {
    One(RawPort),
    Many(Vec<RawPort>),
}

/// The condition keys of a rule as written.
pub struct RawConditions<'a> {
    pub protocol: Option<&'a Spanned<OneOrMany>>,
    pub port: Option<&'a Spanned<RawPorts>>,
    pub family: Option<&'a Spanned<String>>,
    pub destination: Option<&'a Spanned<Vec<String>>>,
}

/// Validate a rule's conditions; None when it has none. Errors name the
/// rule (`what`) and the key's line.
pub fn parse(
    ctx: &Ctx,
    what: &str,
    raw: RawConditions,
    sets: &BTreeMap<String, NamedSet>,
) -> Result<Option<Conditions>, ConfigError> {
    if raw.protocol.is_none() && raw.port.is_none() && raw.family.is_none() && raw.destination.is_none() {
        return Ok(None);
    }
    let mut protocols = Vec::new();
    if let Some(p) = raw.protocol {
        let items = p.value.items();
        if items.is_empty() {
            return Err(ctx.at(p, format!("{what}: `protocol` is an empty list")));
        }
        for item in items {
            let proto = match item.trim() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "icmp" => Proto::Icmp,
                "icmpv6" => Proto::Icmpv6,
                other => {
                    return Err(
                        ctx.at(p, format!("{what}: protocol {:?} is not tcp, udp, icmp or icmpv6", clip(other)))
                    );
                }
            };
            if !protocols.contains(&proto) {
                protocols.push(proto);
            }
        }
    }
    let mut ports = Vec::new();
    if let Some(p) = raw.port {
        let items: Vec<&RawPort> = match &p.value {
            RawPorts::One(one) => vec![one],
            RawPorts::Many(many) => many.iter().collect(),
        };
        if items.is_empty() {
            return Err(ctx.at(p, format!("{what}: `port` is an empty list")));
        }
        for item in items {
            ports.push(port_range(item).map_err(|m| ctx.at(p, format!("{what}: {m}")))?);
        }
        if let Some(no) = protocols.iter().find(|p| !p.has_ports()) {
            let at = raw.protocol.expect("protocols come from `protocol`");
            return Err(ctx.at(
                at,
                format!("{what}: `port` needs tcp or udp, and {} has no ports (give it a rule of its own)", no.name()),
            ));
        }
        if protocols.is_empty() {
            // A port means TCP and UDP when no protocol is named.
            protocols = vec![Proto::Tcp, Proto::Udp];
        }
        ports.sort_unstable();
        ports.dedup();
    }
    protocols.sort_unstable_by_key(|p| p.number());
    let family = match raw.family {
        None => None,
        Some(f) => Some(match f.value.trim() {
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            other => return Err(ctx.at(f, format!("{what}: family {:?} is not ipv4 or ipv6", clip(other)))),
        }),
    };
    if let Some(f) = family {
        let wrong = if f == Family::V4 { Proto::Icmpv6 } else { Proto::Icmp };
        if protocols.contains(&wrong) {
            let (fam, use_) = if f == Family::V4 { ("ipv4", "icmp") } else { ("ipv6", "icmpv6") };
            let at = raw.family.expect("family given");
            return Err(ctx.at(at, format!("{what}: {} never meets `family: {fam}` (use {use_})", wrong.name())));
        }
    }
    let destination = match raw.destination {
        None => None,
        Some(d) => Some(destination(ctx, what, d, sets, family)?),
    };
    Ok(Some(Conditions { protocols, ports, family, destination }))
}

fn port_range(p: &RawPort) -> Result<(u16, u16), String> {
    let one = |n: i64| match u16::try_from(n) {
        Ok(v) if v != 0 => Ok(v),
        _ => Err(format!("port {n} is not in 1..=65535")),
    };
    match p {
        RawPort::Number(n) => one(*n).map(|v| (v, v)),
        RawPort::Text(t) => {
            let parse = |s: &str| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("port {:?} is not a number or a range like \"8000-8100\"", clip(t)))
            };
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => (one(parse(a)?)?, one(parse(b)?)?),
                None => {
                    let v = one(parse(t)?)?;
                    (v, v)
                }
            };
            if a > b {
                return Err(format!("port range {:?} ends before it starts", clip(t)));
            }
            Ok((a, b))
        }
    }
}

fn destination(
    ctx: &Ctx,
    what: &str,
    d: &Spanned<Vec<String>>,
    sets: &BTreeMap<String, NamedSet>,
    family: Option<Family>,
) -> Result<Destination, ConfigError> {
    if d.value.is_empty() {
        return Err(ctx.at(d, format!("{what}: `destination` is an empty list")));
    }
    let mut out = Destination { cidrs: Vec::new(), sets: Vec::new() };
    for (i, entry) in d.value.iter().enumerate() {
        match entry.trim().strip_prefix('@') {
            Some(name) => match sets.get(name) {
                Some(NamedSet::Static(list)) => out.cidrs.extend(list.iter().copied()),
                Some(NamedSet::Dynamic) => {
                    if !out.sets.iter().any(|s| s == name) {
                        out.sets.push(name.to_owned());
                    }
                }
                None => {
                    let known: Vec<&str> = sets.keys().map(String::as_str).collect();
                    return Err(ctx.at(
                        d,
                        format!(
                            "{what}: destination[{i}]: no set {:?} in `sets` (known: {})",
                            clip(name),
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    ));
                }
            },
            None => {
                out.cidrs.push(Cidr::parse(entry).map_err(|m| ctx.at(d, format!("{what}: destination[{i}]: {m}")))?)
            }
        }
    }
    out.cidrs.sort_unstable();
    out.cidrs.dedup();
    if let Some(f) = family
        && out.sets.is_empty()
        && !out.cidrs.iter().any(|c| c.addr.is_ipv4() == (f == Family::V4))
    {
        return Err(ctx.at(d, format!("{what}: no destination of `family: {}`: the rule would never match", fam(f))));
    }
    Ok(out)
}

fn fam(f: Family) -> &'static str {
    if f == Family::V4 { "ipv4" } else { "ipv6" }
}

/// With conditions, tail classes and `tail-N` chains exist: no tproxy may
/// take their marks or chain names.
pub fn check_reserved<'a>(
    ctx: &Ctx,
    any_conditions: bool,
    tproxies: impl Iterator<Item = (&'a str, u32)>,
) -> Result<(), ConfigError> {
    if !any_conditions {
        return Ok(());
    }
    use crate::names::{TAIL_BASE, TAIL_LAST, tproxy_chains};
    for (name, mark) in tproxies {
        if (TAIL_BASE..=TAIL_LAST).contains(&mark) {
            return Err(ctx.top(format!(
                "tproxies.{}.mark {:#x} is reserved by cgtproxy for conditional rules ({TAIL_BASE:#x}..={TAIL_LAST:#x})",
                clip(name),
                mark
            )));
        }
        for c in tproxy_chains(name) {
            if c.strip_prefix("tail-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                return Err(ctx.top(format!(
                    "tproxies.{}: its chain {:?} collides with the chains of conditional rules (tail-N)",
                    clip(name),
                    c
                )));
            }
        }
    }
    Ok(())
}
