//! `sets:`: named destination sets. A static one is a list of CIDRs; a
//! dynamic one (`{ dynamic: true }`) is an empty IPv4 set `NAME` and IPv6
//! set `NAME6` in `table inet cgtproxy` that other programs fill (dnsmasq's
//! `nftset=`, `nft add element`, a script). `@NAME` refers to one in
//! `bypass`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::cidr::Cidr;
use super::ctx::Ctx;
use super::error::ConfigError;
use super::limits::clip;

/// A set as written: a list of CIDRs, or `{ dynamic: true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSet {
    Static(Vec<String>),
    Dynamic(RawDynamic),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDynamic {
    dynamic: bool,
}

/// A named set, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSet {
    Static(Vec<Cidr>),
    /// Filled at run time by other programs.
    Dynamic,
}

/// Parse `sets:`; every error names the set and its line.
pub fn parse(ctx: &Ctx, raw: &BTreeMap<String, Spanned<RawSet>>) -> Result<BTreeMap<String, NamedSet>, ConfigError> {
    let mut out = BTreeMap::new();
    // Kernel names each set takes, to refuse collisions (`a6` against `a`'s IPv6 set).
    let mut taken: HashMap<String, String> =
        crate::names::BUILTIN_SETS.iter().map(|s| ((*s).to_owned(), "a built-in set".to_owned())).collect();
    for (name, s) in raw {
        let here = |m: String| ctx.at(s, format!("sets.{}: {m}", clip(name)));
        let valid = !name.is_empty()
            && name.len() <= 200
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !valid {
            return Err(here("the name must be 1 to 200 characters of A-Z a-z 0-9 - _, starting with a letter".into()));
        }
        let set = match &s.value {
            RawSet::Dynamic(RawDynamic { dynamic: true }) => {
                for kernel_name in crate::names::dynamic_sets(name) {
                    if let Some(owner) = taken.insert(kernel_name.clone(), format!("sets.{name}")) {
                        return Err(here(format!("its kernel set {kernel_name:?} collides with {owner}")));
                    }
                }
                NamedSet::Dynamic
            }
            RawSet::Dynamic(_) => return Err(here("`dynamic: false` is no set: give a list of CIDRs instead".into())),
            RawSet::Static(list) => {
                let mut cidrs = Vec::with_capacity(list.len());
                for (i, c) in list.iter().enumerate() {
                    cidrs.push(Cidr::parse(c).map_err(|m| here(format!("[{i}]: {m}")))?);
                }
                NamedSet::Static(cidrs)
            }
        };
        out.insert(name.clone(), set);
    }
    Ok(out)
}

/// A `bypass` entry: a CIDR or `@NAME`. Static sets add their CIDRs to
/// `cidrs`; dynamic ones are returned by name.
pub fn resolve_bypass(
    ctx: &Ctx,
    raw: &[Spanned<String>],
    sets: &BTreeMap<String, NamedSet>,
) -> Result<(Vec<Cidr>, Vec<String>), ConfigError> {
    let (mut cidrs, mut dynamic) = (Vec::new(), Vec::new());
    for (i, entry) in raw.iter().enumerate() {
        match entry.value.strip_prefix('@') {
            Some(name) => match sets.get(name) {
                Some(NamedSet::Static(list)) => cidrs.extend(list.iter().cloned()),
                Some(NamedSet::Dynamic) => {
                    if !dynamic.iter().any(|d| d == name) {
                        dynamic.push(name.to_owned());
                    }
                }
                None => {
                    let known: Vec<&str> = sets.keys().map(String::as_str).collect();
                    return Err(ctx.at(
                        entry,
                        format!("bypass[{i}]: no set {:?} in `sets` (known: {})", clip(name), known.join(", ")),
                    ));
                }
            },
            None => {
                cidrs.push(Cidr::parse(&entry.value).map_err(|m| ctx.at(entry, format!("bypass[{i}]: {m}")))?);
            }
        }
    }
    Ok((cidrs, dynamic))
}
