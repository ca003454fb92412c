//! Other programs' rules in the forward path, read back for gateway mode: a
//! flow a gateway `tproxy` entry diverts to the local proxy is no longer
//! forwarded, so forward-hook rules (a `DOCKER-USER` drop for an outside
//! address, firewalld's forward policy, libvirt's) never see it. What is
//! found here is said by the log, `check` and `status`
//! (docs/gateway.md, "What TPROXY does to forward rules").

use std::collections::BTreeMap;

use crate::netlink::{NLM_F_DUMP, attrs};

use super::error::NftError;
use super::handle::Nft;
use super::sys::*;

const NF_INET_FORWARD: u32 = 2;

fn family_word(f: u8) -> &'static str {
    match f {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        NFPROTO_BRIDGE => "bridge",
        _ => "other",
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v.strip_suffix(b"\0").unwrap_or(v)).into_owned()
}

impl Nft {
    /// Forward-path rules of other programs that a gateway tproxy entry
    /// skips, one line each (`table ip filter chain DOCKER-USER: 2 rules`).
    pub fn foreign_forward_rules(&mut self) -> Result<Vec<String>, NftError> {
        // (family, table, chain) -> number of rules; and forward-hook chains.
        let mut rules: BTreeMap<(u8, String, String), usize> = BTreeMap::new();
        let mut forward: Vec<(u8, String, String)> = Vec::new();
        let req = self.get(NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, |_| {});
        self.sock.dump(&req, "list chains", |_, p| {
            let family = p.first().copied().unwrap_or(0);
            let (mut table, mut name, mut hook) = (String::new(), String::new(), None);
            for (ty, v) in attrs(p.get(4..).unwrap_or_default()) {
                match ty {
                    NFTA_CHAIN_TABLE => table = text(v),
                    NFTA_CHAIN_NAME => name = text(v),
                    NFTA_CHAIN_HOOK => {
                        hook = attrs(v)
                            .find(|(t, _)| *t == NFTA_HOOK_HOOKNUM)
                            .and_then(|(_, x)| <[u8; 4]>::try_from(x).ok())
                            .map(u32::from_be_bytes)
                    }
                    _ => {}
                }
            }
            if hook == Some(NF_INET_FORWARD) && table != crate::names::TABLE {
                forward.push((family, table.clone(), name.clone()));
            }
            rules.entry((family, table, name)).or_insert(0);
        })?;
        let req = self.get(NFT_MSG_GETRULE, NFPROTO_UNSPEC, NLM_F_DUMP, |_| {});
        self.sock.dump(&req, "list rules", |_, p| {
            let family = p.first().copied().unwrap_or(0);
            let (mut table, mut chain) = (String::new(), String::new());
            for (ty, v) in attrs(p.get(4..).unwrap_or_default()) {
                match ty {
                    NFTA_RULE_TABLE => table = text(v),
                    NFTA_RULE_CHAIN => chain = text(v),
                    _ => {}
                }
            }
            *rules.entry((family, table, chain)).or_insert(0) += 1;
        })?;
        let mut out = Vec::new();
        for ((family, table, chain), n) in &rules {
            let at = format!("table {} {table} chain {chain}", family_word(*family));
            // Docker's DOCKER-USER holds one `return` of its own: more is the admin's.
            if chain == "DOCKER-USER" && *n > 1 {
                out.push(format!("{at}: {} rules of the admin (Docker's DOCKER-USER)", n - 1));
            } else if chain.starts_with("LIBVIRT_FW") && *n > 0 {
                out.push(format!("{at}: {n} rules (libvirt's forward rules)"));
            }
        }
        let mut tables = std::collections::BTreeSet::new();
        let req = self.get(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, NLM_F_DUMP, |_| {});
        self.sock.dump(&req, "list tables", |_, p| {
            let family = p.first().copied().unwrap_or(0);
            if let Some((_, v)) = attrs(p.get(4..).unwrap_or_default()).find(|(t, _)| *t == NFTA_TABLE_NAME) {
                tables.insert((family, text(v)));
            }
        })?;
        for (family, table) in &tables {
            if table == "firewalld" || table.starts_with("libvirt") {
                let owner = if table == "firewalld" { "firewalld's forward policy" } else { "libvirt's rules" };
                out.push(format!("table {} {table} ({owner})", family_word(*family)));
            }
        }
        // Other forward-hook chains that hold rules (Docker's own FORWARD
        // included: its isolation of local networks is kept, local-nets).
        for (family, table, chain) in &forward {
            let n = rules.get(&(*family, table.clone(), chain.clone())).copied().unwrap_or(0);
            if n > 0 && table != "firewalld" && !table.starts_with("libvirt") {
                out.push(format!("table {} {table} chain {chain} (forward hook): {n} rules", family_word(*family)));
            }
        }
        Ok(out)
    }
}
