//! `nft-set` on a rule: a set in the user's own nftables tables that
//! cgtproxy fills with the ids of the cgroups the rule classifies (the
//! format of systemd's `NFTSet=` without its `cgroup:` source prefix:
//! `FAMILY:TABLE:SET`).

use std::fmt;

use serde::Deserialize;

/// One set of the user's, `inet:filter:browsers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NftSetRef {
    /// `inet`, `ip`, `ip6`, `bridge`, `arp` or `netdev`.
    pub family: String,
    pub table: String,
    pub set: String,
}

impl NftSetRef {
    /// The nfproto number of the family (linux/netfilter.h): what the
    /// kernel's nfgenmsg carries.
    pub fn nfproto(&self) -> u8 {
        family_number(&self.family).expect("validated when parsed")
    }
}

impl fmt::Display for NftSetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.family, self.table, self.set)
    }
}

fn family_number(name: &str) -> Option<u8> {
    Some(match name {
        "inet" => 1,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => return None,
    })
}

/// One `nft-set` or a list of them, as written. (Untagged: its content is
/// buffered, so positions are those of the whole value, a `Spanned` around
/// it.)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// An nftables object name as `nft` accepts it unquoted: a letter or `_`,
/// then letters, digits, `_`, `.`, `-`, `/`; at most 255 bytes.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
}

/// Parse `FAMILY:TABLE:SET`; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<NftSetRef, String> {
    let shown = super::limits::clip(text);
    let parts: Vec<&str> = text.split(':').collect();
    let [family, table, set] = parts[..] else {
        return Err(format!("nft-set {shown:?} is not FAMILY:TABLE:SET (e.g. inet:filter:browsers)"));
    };
    if family_number(family).is_none() {
        return Err(format!("nft-set {shown:?}: family {family:?} is not one of inet, ip, ip6, bridge, arp, netdev"));
    }
    for (what, name) in [("table", table), ("set", set)] {
        if !valid_name(name) {
            return Err(format!(
                "nft-set {shown:?}: {what} name {name:?} is not a valid nftables name (a letter or _, then letters, \
                 digits, _ . - /)"
            ));
        }
    }
    if table == crate::names::TABLE && (family == "inet" || family == "bridge") {
        return Err(format!("nft-set {shown:?}: table {family} {table} is cgtproxy's own; name a table of yours"));
    }
    Ok(NftSetRef { family: family.into(), table: table.into(), set: set.into() })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sets_are_family_table_set_with_names_nft_accepts() {
        let s = parse("inet:filter:browsers").unwrap();
        assert_eq!(
            (s.family.as_str(), s.table.as_str(), s.set.as_str(), s.nfproto()),
            ("inet", "filter", "browsers", 1)
        );
        assert_eq!(s.to_string(), "inet:filter:browsers");
        assert_eq!(parse("ip6:t:s").unwrap().nfproto(), 10);
        assert!(parse("filter:browsers").unwrap_err().contains("FAMILY:TABLE:SET"));
        assert!(parse("cgroup:inet:filter:b").unwrap_err().contains("FAMILY:TABLE:SET"));
        assert!(parse("inet6:filter:b").unwrap_err().contains("family \"inet6\""));
        assert!(parse("inet:fil ter:b").unwrap_err().contains("table name"));
        assert!(parse("inet:filter:1b").unwrap_err().contains("set name"));
        assert!(parse("inet:cgtproxy:b").unwrap_err().contains("cgtproxy's own"));
    }
}
