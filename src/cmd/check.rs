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
        let _ = write!(s, "  rule {} (line {}): {} -> {}", r.index, r.line, r.pattern, r.target);
        let sets: Vec<String> = r.nft_sets.iter().map(ToString::to_string).collect();
        if !sets.is_empty() {
            let _ = write!(s, ", published to {}", sets.join(", "));
        }
        s.push('\n');
    }
    for e in &cfg.gateway {
        let _ = writeln!(s, "  gateway {} (line {}): {e}", e.index, e.line);
    }
    for w in warnings(cfg) {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// Paths a user can create below: their own `user@UID.service` subtree
/// (systemd delegates it), probed at two depths.
const DELEGATED: [&str; 2] = [
    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope",
    "/user.slice/user-1000.slice/user@1000.service/x.slice/x.service",
];

/// How much a target lets out: a rule further down this order is laxer.
fn strictness(t: &crate::config::Target) -> u8 {
    use crate::config::Target;
    match t {
        Target::Drop | Target::Reject => 2,
        Target::Tproxy(_) => 1,
        Target::Direct => 0,
    }
}

/// Does `pattern` match wherever it finds its text, so that a name a user
/// gives a cgroup in their own subtree can make it match? True unless every
/// top-level alternative starts with `^` or `\A` not followed by `.*`/`.+`.
pub fn matches_anywhere(pattern: &str) -> bool {
    let mut alternatives = Vec::new();
    let (mut depth, mut start, mut class, mut escaped) = (0i32, 0, false, false);
    for (i, c) in pattern.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !class => class = true,
            ']' if class => class = false,
            _ if class => {}
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                alternatives.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    alternatives.push(&pattern[start..]);
    alternatives.iter().any(|a| {
        let mut a = *a;
        // Leading flag groups such as `(?i)`.
        while let Some(rest) = a.strip_prefix("(?").filter(|r| r.find(')').is_some_and(|e| !r[..e].contains(':'))) {
            a = &rest[rest.find(')').map_or(0, |e| e + 1)..];
        }
        let Some(rest) = a.strip_prefix('^').or_else(|| a.strip_prefix("\\A")) else { return true };
        rest.starts_with(".*") || rest.starts_with(".+") || rest.starts_with("(?s:.") || rest.starts_with("(?s).")
    })
}

/// Rules that names can turn against the config: a pattern that matches
/// anywhere also matches inside a user's delegated subtree, where the user
/// names the cgroups; when a later rule would give such a cgroup a stricter
/// verdict, the user gets the laxer one by naming a cgroup after the
/// pattern. Likewise an unanchored `proxy-cgroups` entry (a listener in a
/// cgroup named after it is kept direct). One line each, with the line and
/// column of the pattern.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        if !matches_anywhere(&r.pattern) {
            continue;
        }
        let stricter = cfg.rules[i + 1..].iter().find(|s| {
            strictness(&s.target) > strictness(&r.target)
                && (matches_anywhere(&s.pattern) || DELEGATED.iter().any(|p| s.regex.is_match(p)))
        });
        if let Some(s) = stricter {
            out.push(format!(
                "{}, line {} column {}: rules[{}] `{}` ({}) is not anchored: it matches inside a user's own \
                 `user@UID.service` subtree too, where the user names the cgroups, so a user can get `{}` instead of \
                 rules[{}]'s `{}` by naming a cgroup after it; anchor it to the cgroup it means (`^/system\\.slice/\
                 mihomo\\.service$`)",
                cfg.origin, r.at.0, r.at.1, r.index, r.pattern, r.target, r.target, s.index, s.target
            ));
        }
    }
    for p in &cfg.proxy_cgroups {
        if matches_anywhere(&p.pattern) {
            out.push(format!(
                "{}, line {} column {}: proxy-cgroups[{}] `{}` is not anchored: any user can create a cgroup that \
                 matches it and listen on a tproxy port there to be kept direct; anchor it (`^/system\\.slice/\
                 mihomo\\.service$`)",
                cfg.origin, p.at.0, p.at.1, p.index, p.pattern
            ));
        }
    }
    out
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
        ok.push(crate::bridge::probe(&mut nft).line(cfg));
        ok.extend(crate::bridge::vpn_warnings().into_iter().map(|w| format!("gateway: WARNING: {w}")));
        if let Some(line) = crate::bridge::skipped_forward_rules(&nft.foreign_forward_rules().unwrap_or_default()) {
            ok.push(format!("gateway: {line}"));
        }
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
    use super::*;

    #[test]
    fn anchoring_is_recognised() {
        for p in [r"\/system\.slice\/mihomo\.service", "mihomo", "^.*mihomo", "^/a|b", "(?i)x", "^(?s).*x", r"\A.+x"] {
            assert!(matches_anywhere(p), "{p}");
        }
        for p in [r"^/system\.slice/mihomo\.service$", r"\A/a", "(?i)^/a|^/b", r"^/a(x|y)", r"^/[|]|^/b"] {
            assert!(!matches_anywhere(p), "{p}");
        }
    }

    #[test]
    fn unanchored_laxer_rules_are_warned_with_line_and_column() {
        let cfg = Config::parse(
            "version: 1\ntproxies: {p: {mark: 1, port: 7}}\nproxy-cgroups: ['mihomo']\nrules:\n  - match: \\/system\\.slice\\/mihomo\\.service\n    direct: true\n  - {match: '^/system\\.slice/ok$', direct: true}\n  - {match: 'evil', drop: true}\n  - {match: '^/user\\.slice/', tproxy: p}\n",
            "t.yaml",
        )
        .unwrap();
        let w = warnings(&cfg);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with(
                "t.yaml, line 5 column 12: rules[0] `\\/system\\.slice\\/mihomo\\.service` (direct) is not anchored"
            ),
            "{}",
            w[0]
        );
        assert!(w[0].contains("`direct` instead of rules[2]'s `drop`"), "{}", w[0]);
        assert!(w[1].starts_with("t.yaml, line 3 column 17: proxy-cgroups[0] `mihomo` is not anchored"), "{}", w[1]);
        assert!(describe(&cfg).contains("warning: t.yaml, line 5"));
        // The example config is anchored.
        let example =
            Config::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/misc/config/example.yaml")))
                .unwrap();
        assert_eq!(warnings(&example), Vec::<String>::new());
    }

    #[test]
    fn summary_names_every_dns_hijack_key() {
        let cfg = Config::parse(
            "version: 1\ntproxies:\n  p: {mark: 1, port: 7, dns-hijack: {ip: 127.0.0.2, ip6: '::1', port: 1053, tcp: true}}\n",
            "t.yaml",
        )
        .unwrap();
        let text = super::describe(&cfg);
        assert!(
            text.contains(
                "tproxy p: mark 0x1, port 7, other protocols dropped, dns-hijack 127.0.0.2:1053 and [::1]:1053 (+tcp)"
            ),
            "{text}"
        );
    }
}
