//! The file as written (serde types with source locations) and its
//! validation into [`Config`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::conditions;
use super::ctx::{Ctx, one_target};
use super::error::ConfigError;
use super::limits::{self, clip};
use super::model::{Config, DEFAULT_ROUTE_TABLE, DEFAULT_STRICT_DEPTH};
use super::publish;
use super::regex_compat;
use super::sets;
use super::target::{DnsHijack, ProxyCgroup, Rule, Tproxy};
use crate::cgroup::CgroupRoot;

/// `version` was a string in the Go implementation; YAML authors write both
/// `1` and `"1"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Version {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    version: Option<Spanned<Version>>,
    cgroup_root: Option<Spanned<String>>,
    route_table: Option<Spanned<i64>>,
    #[serde(default)]
    bypass: Vec<Spanned<String>>,
    #[serde(default)]
    tproxies: BTreeMap<String, Spanned<RawTproxy>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    counters: bool,
    strict_depth: Option<Spanned<i64>>,
    flow_mark_mask: Option<Spanned<i64>>,
    #[serde(default)]
    drop_loopback: bool,
    #[serde(default)]
    gateway: Vec<Spanned<super::gateway::RawEntry>>,
    #[serde(default)]
    gateway_bridge_netfilter_off: bool,
    #[serde(default)]
    sets: BTreeMap<String, Spanned<sets::RawSet>>,
    #[serde(default)]
    proxy_cgroups: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTproxy {
    mark: Option<Spanned<i64>>,
    port: Option<Spanned<i64>>,
    #[serde(default)]
    no_udp: bool,
    #[serde(default)]
    no_ipv6: bool,
    dns_hijack: Option<Spanned<RawDnsHijack>>,
    other_protocols: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsHijack {
    ip: Option<Spanned<String>>,
    ip6: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    #[serde(default)]
    tcp: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    direct: bool,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    reject: bool,
    tproxy: Option<Spanned<String>>,
    #[serde(rename = "nft-set")]
    nft_set: Option<Spanned<publish::OneOrMany>>,
    protocol: Option<Spanned<publish::OneOrMany>>,
    port: Option<Spanned<conditions::RawPorts>>,
    family: Option<Spanned<String>>,
    destination: Option<Spanned<Vec<String>>>,
}

/// Route tables the kernel reserves: unspec, default, main, local.
const RESERVED_TABLES: [i64; 4] = [0, 253, 254, 255];

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text)
        .map_err(|e| ConfigError::Syntax { file: file.to_owned(), message: limits::cap(e.to_string()) })?;
    let ctx = Ctx { file };

    match &raw.version {
        None => return Err(ctx.top("missing `version` (this format is `version: 1`)")),
        Some(v) => {
            let ok = match &v.value {
                Version::Int(n) => *n == 1,
                Version::Str(s) => s.trim() == "1",
            };
            if !ok {
                let v_text = match &v.value {
                    Version::Int(n) => n.to_string(),
                    Version::Str(s) => format!("{:?}", clip(s)),
                };
                return Err(ctx.at(v, format!("unsupported version {v_text}; expected 1")));
            }
        }
    }

    let cgroup_root = match &raw.cgroup_root {
        None => CgroupRoot::Auto,
        Some(s) if s.value == "AUTO" => CgroupRoot::Auto,
        Some(s) if s.value.starts_with('/') => CgroupRoot::Path(PathBuf::from(&s.value)),
        Some(s) => {
            return Err(ctx.at(s, format!("cgroup-root {:?} must be AUTO or an absolute path", clip(&s.value))));
        }
    };

    let route_table = match &raw.route_table {
        None => DEFAULT_ROUTE_TABLE,
        Some(t) if RESERVED_TABLES.contains(&t.value) => {
            return Err(ctx.at(
                t,
                format!("route-table {} is reserved by the kernel (0, 253 default, 254 main, 255 local)", t.value),
            ));
        }
        Some(t) => u32::try_from(t.value)
            .map_err(|_| ctx.at(t, format!("route-table {} is not in 1..=4294967295", t.value)))?,
    };

    let named_sets = sets::parse(&ctx, &raw.sets)?;
    let (bypass, bypass_sets) = sets::resolve_bypass(&ctx, &raw.bypass, &named_sets)?;

    let tproxies = parse_tproxies(&ctx, &raw.tproxies)?;
    // One regex budget for rules and proxy-cgroups.
    let mut budget = limits::REGEX_BUDGET;
    let rules = parse_rules(&ctx, &raw.rules, &tproxies, &named_sets, &mut budget)?;
    let gateway = super::gateway::parse(&ctx, &raw.gateway, &tproxies, &named_sets)?;
    let mut proxy_cgroups = Vec::with_capacity(raw.proxy_cgroups.len());
    for (index, p) in raw.proxy_cgroups.iter().enumerate() {
        let regex = regex_compat::compile_within(&p.value, &mut budget)
            .map_err(|e| ctx.at(p, format!("proxy-cgroups[{index}]: bad regex {:?}: {e}", clip(&p.value))))?;
        let at = (p.referenced.line(), p.referenced.column());
        proxy_cgroups.push(ProxyCgroup { index, at, pattern: p.value.clone(), regex });
    }

    let strict_depth = match &raw.strict_depth {
        None => DEFAULT_STRICT_DEPTH,
        Some(d) if (1..=64).contains(&d.value) => d.value as u32,
        Some(d) => return Err(ctx.at(d, format!("strict-depth {} is not in 1..=64", d.value))),
    };

    let flow_mark_mask = match &raw.flow_mark_mask {
        None => super::model::DEFAULT_FLOW_MARK_MASK,
        Some(m) => parse_flow_mask(&ctx, m, tproxies.len())?,
    };

    Ok(Config {
        origin: file.to_owned(),
        cgroup_root,
        route_table,
        bypass,
        bypass_sets,
        sets: named_sets,
        tproxies,
        rules,
        strict: raw.strict,
        counters: raw.counters,
        strict_depth,
        flow_mark_mask,
        drop_loopback: raw.drop_loopback,
        gateway,
        gateway_bridge_netfilter_off: raw.gateway_bridge_netfilter_off,
        proxy_cgroups,
    })
}

/// `flow-mark-mask`: 0 (no cache), or one run of at least 4 contiguous
/// bits with room for every class (direct, drop, reject, each tproxy).
fn parse_flow_mask(ctx: &Ctx, m: &Spanned<i64>, tproxies: usize) -> Result<u32, ConfigError> {
    let mask = u32::try_from(m.value)
        .map_err(|_| ctx.at(m, format!("flow-mark-mask {} is not in 0..=0xffffffff", m.value)))?;
    if mask == 0 {
        return Ok(0);
    }
    let shifted = mask >> mask.trailing_zeros();
    if shifted & (shifted + 1) != 0 {
        return Err(ctx.at(m, format!("flow-mark-mask {mask:#010x} is not one run of contiguous bits")));
    }
    let bits = mask.count_ones();
    let classes = 3 + tproxies as u64;
    if bits < 4 || (1u64 << bits) - 1 < classes {
        return Err(ctx.at(
            m,
            format!("flow-mark-mask {mask:#010x} has {bits} bits: too few for {classes} classes (at least 4 bits)"),
        ));
    }
    Ok(mask)
}

fn parse_port(ctx: &Ctx, what: &str, value: &Spanned<i64>) -> Result<u16, ConfigError> {
    match u16::try_from(value.value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ctx.at(value, format!("{what} {} is not a port in 1..=65535", value.value))),
    }
}

fn parse_tproxies(
    ctx: &Ctx,
    raw: &BTreeMap<String, Spanned<RawTproxy>>,
) -> Result<BTreeMap<String, Tproxy>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut marks: HashMap<u32, &str> = HashMap::new();
    let mut chains: HashMap<String, &str> =
        crate::names::BUILTIN_CHAINS.iter().map(|c| ((*c).to_owned(), "the built-in chains")).collect();
    for (name, tp) in raw {
        let shown = clip(name);
        let here = |m: String| ctx.at(tp, format!("tproxies.{shown}: {m}"));
        let valid_name = !name.is_empty()
            && name.len() <= 200
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(here("the name must be 1 to 200 characters of A-Z a-z 0-9 - _ .".into()));
        }
        for chain in crate::names::tproxy_chains(name) {
            if let Some(owner) = chains.insert(chain.clone(), name) {
                return Err(here(format!("its chain {:?} collides with a chain of {}", clip(&chain), clip(owner))));
            }
        }
        let t = &tp.value;
        let mark = match &t.mark {
            None => return Err(here("missing `mark`".into())),
            Some(m) => match u32::try_from(m.value) {
                Ok(v) if v != 0 => v,
                _ => {
                    return Err(ctx.at(m, format!("tproxies.{shown}.mark {} is not in 1..=4294967295", m.value)));
                }
            },
        };
        if crate::names::RESERVED_CLASSES.contains(&mark) {
            let m = t.mark.as_ref().expect("mark checked above");
            return Err(ctx.at(
                m,
                format!("tproxies.{shown}.mark {mark:#x} is reserved by cgtproxy (direct/drop/reject classes)"),
            ));
        }
        if let Some(other) = marks.insert(mark, name) {
            let m = t.mark.as_ref().expect("mark checked above");
            return Err(
                ctx.at(m, format!("tproxies.{shown}.mark {mark} is already the mark of tproxies.{}", clip(other)))
            );
        }
        let port = match &t.port {
            None => return Err(here("missing `port`".into())),
            Some(p) => parse_port(ctx, &format!("tproxies.{shown}.port"), p)?,
        };
        let dns_hijack = match &t.dns_hijack {
            None => None,
            Some(d) => {
                let ip = match &d.value.ip {
                    None => std::net::Ipv4Addr::LOCALHOST,
                    Some(ip) => ip.value.trim().parse().map_err(|_| {
                        ctx.at(
                            ip,
                            format!("tproxies.{shown}.dns-hijack.ip {:?} is not an IPv4 address", clip(&ip.value)),
                        )
                    })?,
                };
                let ip6 = match &d.value.ip6 {
                    None => None,
                    Some(ip) => Some(ip.value.trim().parse().map_err(|_| {
                        ctx.at(
                            ip,
                            format!("tproxies.{shown}.dns-hijack.ip6 {:?} is not an IPv6 address", clip(&ip.value)),
                        )
                    })?),
                };
                let port = match &d.value.port {
                    None => 53,
                    Some(p) => parse_port(ctx, &format!("tproxies.{shown}.dns-hijack.port"), p)?,
                };
                Some(DnsHijack { ip, ip6, port, tcp: d.value.tcp })
            }
        };
        let other_direct = match &t.other_protocols {
            None => false,
            Some(o) if o.value == "drop" => false,
            Some(o) if o.value == "direct" => true,
            Some(o) => {
                return Err(ctx.at(o, format!("tproxies.{name}.other-protocols {:?} is not drop or direct", o.value)));
            }
        };
        out.insert(
            name.clone(),
            Tproxy { name: name.clone(), mark, port, no_udp: t.no_udp, no_ipv6: t.no_ipv6, dns_hijack, other_direct },
        );
    }
    Ok(out)
}

fn parse_rules(
    ctx: &Ctx,
    raw: &[Spanned<RawRule>],
    tproxies: &BTreeMap<String, Tproxy>,
    sets: &BTreeMap<String, sets::NamedSet>,
    budget: &mut usize,
) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (index, r) in raw.iter().enumerate() {
        let here = |m: String| ctx.at(r, format!("rules[{index}]: {m}"));
        let Some(pattern) = &r.value.pattern else {
            return Err(here("missing `match`".into()));
        };
        let what = format!("rules[{index}]");
        let (v, t) = (&r.value, r.value.tproxy.as_ref());
        let target = one_target(ctx, &what, v.direct, v.drop, Some(v.reject), t, tproxies)?.map_err(here)?;
        let regex = regex_compat::compile_within(&pattern.value, budget)
            .map_err(|e| ctx.at(pattern, format!("rules[{index}]: bad regex {:?}: {e}", clip(&pattern.value))))?;
        let mut nft_sets = Vec::new();
        for (written, s) in r.value.nft_set.iter().flat_map(|s| s.value.items().iter().map(move |v| (s, v))) {
            let set = publish::parse(s).map_err(|m| ctx.at(written, format!("rules[{index}]: {m}")))?;
            if !nft_sets.contains(&set) {
                nft_sets.push(set);
            }
        }
        let cond = conditions::RawConditions {
            protocol: v.protocol.as_ref(),
            port: v.port.as_ref(),
            family: v.family.as_ref(),
            destination: v.destination.as_ref(),
        };
        let conditions = conditions::parse(ctx, &what, cond, sets)?;
        let at = (pattern.referenced.line(), pattern.referenced.column());
        rules.push(Rule {
            index,
            line: r.referenced.line(),
            at,
            pattern: pattern.value.clone(),
            regex,
            target,
            nft_sets,
            conditions,
        });
    }
    let any = rules.iter().any(|r| r.conditions.is_some());
    conditions::check_reserved(ctx, any, tproxies.values().map(|t| (t.name.as_str(), t.mark)))?;
    Ok(rules)
}
