//! `cgtproxy check`: is the config valid, and can this process program the
//! kernel? Nothing here leaves any state behind.

use std::fmt::Write;

use crate::cgroup;
use crate::config::Config;
use crate::nft::{Nft, encode, sys};
use crate::ruleset::Ruleset;

const CAP_NET_ADMIN: u32 = 12;

/// Does this process have CAP_NET_ADMIN in its effective set?
pub fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// A human summary of a valid config.
pub fn describe(cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config {} is valid:", cfg.origin);
    let _ =
        writeln!(s, "  route table {}, {} bypass entries, strict {}", cfg.route_table, cfg.bypass.len(), cfg.strict);
    for t in cfg.tproxies.values() {
        let _ = writeln!(
            s,
            "  tproxy {}: mark {:#x}, port {}, other protocols {}{}{}{}",
            t.name,
            t.mark,
            t.port,
            if t.other_direct { "direct" } else { "dropped" },
            if t.no_udp { ", no-udp" } else { "" },
            if t.no_ipv6 { ", no-ipv6" } else { "" },
            t.dns_hijack
                .as_ref()
                .map(|d| format!(
                    ", dns-hijack {}:{}{}{}",
                    d.ip,
                    d.port,
                    d.ip6.map(|ip6| format!(" and [{ip6}]:{}", d.port)).unwrap_or_default(),
                    if d.tcp { " (+tcp)" } else { "" }
                ))
                .unwrap_or_default()
        );
    }
    for r in &cfg.rules {
        let _ = writeln!(s, "  rule {} (line {}): {} -> {}", r.index, r.line, r.pattern, r.target);
    }
    for e in &cfg.gateway {
        let _ = writeln!(s, "  gateway {} (line {}): {e}", e.index, e.line);
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("missing CAP_NET_ADMIN: run as root or with AmbientCapabilities=CAP_NET_ADMIN")]
    NoNetAdmin,
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(
        "the kernel cannot hold cgtproxy's rules: {0} (needs nf_tables with socket, tproxy, nat, reject, ct and interval sets)"
    )]
    Kernel(#[source] crate::nft::NftError),
}

/// Everything `cgtproxy check permission` verifies, one line per finding.
/// The kernel probe builds the full ruleset for `cfg` in a scratch table
/// and deletes it in the same batch, so nothing is left even on success.
pub fn permission(cfg: &Config) -> Result<Vec<String>, CheckError> {
    let mut ok = Vec::new();
    if !has_net_admin() {
        return Err(CheckError::NoNetAdmin);
    }
    ok.push("CAP_NET_ADMIN: present".to_owned());
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    ok.push(format!("cgroup2: mounted at {}", root.display()));
    probe_kernel().map_err(CheckError::Kernel)?;
    ok.push(
        "kernel: accepted the full ruleset in a scratch table (socket cgroupv2, tproxy, dnat, reject, ct, interval \
         sets, fib, redirect)"
            .to_owned(),
    );
    if cfg.gateway.iter().any(|e| matches!(e.target, crate::config::Target::Tproxy(_))) {
        let mut nft = Nft::open().map_err(CheckError::Kernel)?;
        ok.push(crate::bridge::probe(&mut nft).line());
    }
    Ok(ok)
}

fn probe_kernel() -> Result<(), crate::nft::NftError> {
    // A config that uses every feature, so the probe covers them all even
    // when the user's config does not.
    let probe = Config::parse(
        "version: 1\nbypass: [127.0.0.0/8, '::1']\ntproxies:\n  p: {mark: 1, port: 1, dns-hijack: {tcp: true}}\n  q: {mark: 2, port: 2, no-udp: true, no-ipv6: true}\nrules: [{match: x, tproxy: p}, {match: y, reject: true}]\ngateway: [{interface: 'x*', source: [192.0.2.0/24], tproxy: p}]\n",
        "<probe>",
    )
    .expect("the probe config is valid");
    let mut rs = Ruleset::new(&probe);
    // Brouting is probed on its own (Nft::can_broute): the daemon works
    // without it.
    rs.broute = false;
    rs.levels.insert(1);
    rs.elements
        .insert(1, crate::ruleset::Element { level: 1, verdict: crate::ruleset::Verdict::Tproxy(1), rule: Some(0) });
    let mut nft = Nft::open()?;
    let mut b = nft.batch();
    b.table = crate::nft::probe_table();
    encode::full(&mut b, &rs);
    encode::table(&mut b, sys::NFT_MSG_DELTABLE, 0, "delete scratch table");
    nft.commit(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_names_every_dns_hijack_key() {
        let cfg = crate::config::Config::parse(
            "version: 1\ntproxies:\n  p: {mark: 1, port: 7, dns-hijack: {ip: 127.0.0.2, ip6: '::1', port: 1053, tcp: true}}\n",
            "t.yaml",
        )
        .unwrap();
        let text = super::describe(&cfg);
        assert!(text.contains("tproxy p: mark 0x1, port 7, other protocols dropped, dns-hijack 127.0.0.2:1053 and [::1]:1053 (+tcp)"), "{text}");
    }
}
