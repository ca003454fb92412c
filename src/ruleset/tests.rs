use super::verdict::merge;
use super::*;
use crate::cgroup::Cgroup;
use crate::config::Config;
use crate::names::*;
use std::path::Path;

/// Compare `actual` with the checked-in file; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

fn cg(path: &str, id: u64) -> Cgroup {
    Cgroup { path: path.into(), id, level: crate::cgroup::level_of(path) }
}

fn example() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/config/example.yaml")).unwrap()
}

fn desktop() -> Vec<Cgroup> {
    vec![
        cg("/system.slice", 10),
        cg("/system.slice/mihomo.service", 11),
        cg("/system.slice/sshd.service", 12),
        cg("/user.slice", 20),
        cg("/user.slice/user-1000.slice", 21),
        cg("/user.slice/user-1000.slice/user@1000.service", 22),
        cg("/user.slice/user-1000.slice/user@1000.service/app.slice", 23),
        cg("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-com.parsecgaming.parsec@2.service", 24),
        cg("/user.slice/user-1000.slice/user@1000.service/cgtproxy.slice/cgtproxy-drop.slice/run-u7.service", 25),
    ]
}

#[test]
fn example_ruleset_golden() {
    // With a Firefox scope: the example's QUIC rule gives it a tail.
    let mut cgroups = desktop();
    cgroups.push(cg(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-org.mozilla.firefox-4242.scope",
        26,
    ));
    let rs = Ruleset::build(&example(), &cgroups);
    golden("example.nft", &rs.render(&cgroups));
}

#[test]
fn empty_ruleset_golden() {
    let rs = Ruleset::build(&Config::builtin_default(), &desktop());
    assert!(rs.elements.is_empty() && rs.levels.is_empty());
    golden("builtin-default.nft", &rs.render(&desktop()));
}

#[test]
fn tproxy_options_golden() {
    let cfg = Config::parse(
        "version: 1\n\
         bypass: [10.0.0.0/8, 10.1.0.0/16, 11.0.0.0/8, 192.0.2.7, 2001:db8::/32, 198.51.100.0/25, 198.51.100.128/26]\n\
         tproxies:\n\
         \x20 a: {mark: 1, port: 1001, no-udp: true, dns-hijack: {port: 5353, tcp: true}}\n\
         \x20 b: {mark: 2, port: 1002, no-ipv6: true}\n\
         \x20 c: {mark: 3, port: 1003, no-udp: true, no-ipv6: true}\n\
         rules:\n\
         \x20 - {match: '^/a', tproxy: a}\n\
         \x20 - {match: '^/b', tproxy: b}\n\
         \x20 - {match: '^/c', tproxy: c}\n\
         \x20 - {match: '^/d', drop: true}\n",
        "opts.yaml",
    )
    .unwrap();
    let cgroups = [cg("/a", 1), cg("/b/x/y", 2), cg("/c/z", 3), cg("/d", 4), cg("/e", 5)];
    let rs = Ruleset::build(&cfg, &cgroups);
    assert_eq!(rs.levels.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
    golden("tproxy-options.nft", &rs.render(&cgroups));
}

#[test]
fn unmatched_cgroups_are_not_in_the_map() {
    let rs = Ruleset::build(&example(), &desktop());
    assert!(!rs.elements.contains_key(&12), "sshd matches no rule");
    assert_eq!(rs.elements[&11].verdict, Verdict::Direct);
    assert_eq!(rs.elements[&25].verdict, Verdict::Drop);
    assert_eq!(rs.elements[&22].verdict, Verdict::Tproxy(3000));
    assert_eq!(rs.elements[&24].verdict, Verdict::Direct);
    for v in [Verdict::Direct, Verdict::Drop, Verdict::Tproxy(3000), Verdict::Continue] {
        assert_eq!(Verdict::from_class(v.class()), v);
    }
    assert_eq!(rs.elements[&24].rule, Some(4));
}

#[test]
fn merges_bypass_ranges() {
    assert_eq!(merge(vec![(5, 9), (0, 3), (4, 4), (20, 30), (25, 26)]), [(0, 9), (20, 30)]);
    assert_eq!(merge(vec![(0, u128::MAX), (1, 2)]), [(0, u128::MAX)]);
}

#[test]
fn strict_ruleset_golden() {
    let cfg = Config::parse(
        "version: 1\nstrict: true\nstrict-depth: 3\ntproxies: {p: {mark: 1, port: 2}}\n\
         rules:\n  - {match: '^/a/b$', tproxy: p}\n  - {match: '^/d', drop: true}\n",
        "strict.yaml",
    )
    .unwrap();
    let cgroups = [cg("/a", 1), cg("/a/b", 2), cg("/a/b/c", 3), cg("/d/e/f/g/h", 4)];
    let rs = Ruleset::build(&cfg, &cgroups);
    // Every known cgroup is in the map; unmatched ones continue.
    assert_eq!(rs.elements[&1].verdict, Verdict::Continue);
    assert_eq!(rs.elements[&3].verdict, Verdict::Continue);
    assert_eq!(rs.elements[&4].verdict, Verdict::Drop);
    // Levels 1..=3 always, plus deeper known ones (not held there).
    assert_eq!(rs.levels.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 5]);
    assert_eq!(rs.level_rules(5), [Stmt::ClassifyLevel { level: 5 }, Stmt::Decided { cache: true }]);
    golden("strict.nft", &rs.render(&cgroups));
}

#[test]
fn nft_text_paths_are_relative_to_sys_fs_cgroup() {
    use std::path::Path;
    assert_eq!(render::nft_cgroup_prefix(Path::new("/sys/fs/cgroup")).as_deref(), Some(""));
    assert_eq!(render::nft_cgroup_prefix(Path::new("/sys/fs/cgroup/unified")).as_deref(), Some("unified/"));
    assert_eq!(render::nft_cgroup_prefix(Path::new("/mnt/cg")), None);
    let rs = Ruleset::build(&example(), &desktop());
    let hybrid = rs.render_for_nft(Path::new("/sys/fs/cgroup/unified"), &desktop()).unwrap();
    assert!(hybrid.contains("\"unified/user.slice/"), "{hybrid}");
    assert_eq!(rs.render_for_nft(Path::new("/sys/fs/cgroup"), &desktop()).unwrap(), rs.render(&desktop()));
}

const GATEWAY: &str = "version: 1
bypass: [127.0.0.0/8, '::1', 192.0.2.0/24]
tproxies:
  mihomo:
    mark: 3000
    port: 7893
    dns-hijack: {port: 1053, ip6: '::1', tcp: true}
  lite: {mark: 3001, port: 7894, no-udp: true, no-ipv6: true}
rules:
  - {match: '^/user\\.slice/', tproxy: mihomo}
gateway:
  - interface: \"br-*\"
    tproxy: mihomo
  - source: [198.51.100.0/24, 198.51.101.0/24, \"2001:db8:50::/64\"]
    tproxy: lite
  - interface: virbr0
    source: [192.168.122.0/24]
    direct: true
  - interface: eth1
    drop: true
";

#[test]
fn gateway_ruleset_golden() {
    let cfg = Config::parse(GATEWAY, "gateway.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &desktop());
    golden("gateway.nft", &rs.render(&desktop()));
    // Without broute support there is no bridge table; the inet part stays.
    let mut no_broute = rs.clone();
    no_broute.broute = false;
    let text = no_broute.render(&desktop());
    assert!(!text.contains("table bridge") && text.contains("chain gateway-classify"), "{text}");
}

/// Without `ip6`, only IPv4 DNS is hijacked: IPv6 DNS of a gateway client
/// is proxied like its other traffic (as for cgroups), not forwarded as it
/// is (a red-team finding), and the forward guard drops what would leave.
#[test]
fn gateway_ipv6_dns_without_ip6_is_proxied_not_forwarded() {
    let cfg = Config::parse(&GATEWAY.replace("ip6: '::1', ", ""), "gateway.yaml").unwrap();
    let text = Ruleset::build(&cfg, &desktop()).render(&desktop());
    assert!(text.contains("ct mark 0x00000bb8 meta nfproto ipv4 udp dport 53 return"), "{text}");
    assert!(text.contains("ct mark 0x00000bb8 meta nfproto ipv4 tcp dport 53 return"), "{text}");
    assert!(!text.contains("ct mark 0x00000bb8 udp dport 53 return"), "{text}");
    assert!(text.contains("type filter hook forward priority filter"), "{text}");
}

#[test]
fn gateway_with_counters_golden() {
    let text = GATEWAY.replace("version: 1\n", "version: 1\ncounters: true\n");
    let cfg = Config::parse(&text, "gateway.yaml").unwrap();
    golden("gateway-counters.nft", &Ruleset::build(&cfg, &[]).render(&[]));
}

#[test]
fn no_gateway_no_gateway_chains() {
    let rs = Ruleset::build(&example(), &desktop());
    let text = rs.render(&desktop());
    assert!(!text.contains("gateway") && !text.contains("table bridge"), "{text}");
}

/// `status` puts kernel rule counters next to entries by position: the map
/// from rules to entries must follow the chains exactly.
#[test]
fn gateway_rule_entries_follow_the_chains() {
    let cfg = Config::parse(GATEWAY, "gateway.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &[]);
    let classify = rs.chains().into_iter().find(|c| c.name == CHAIN_GATEWAY_CLASSIFY).unwrap();
    let inet = gateway::rule_entries(&rs, false);
    assert_eq!(inet.len(), classify.rules.len());
    assert_eq!(inet, [None, None, Some(0), Some(1), Some(1), Some(2), Some(3)]);
    let bridge = rs.bridge_chains().into_iter().find(|c| c.name == CHAIN_PREROUTING).unwrap();
    assert_eq!(gateway::rule_entries(&rs, true).len(), bridge.rules.len());
    for (stmt, entry) in classify.rules.iter().zip(&inet) {
        assert_eq!(matches!(stmt, Stmt::GwEntry { .. }), entry.is_some(), "{stmt}");
    }
}

/// One element per cgroup: its size is the daemon's memory per cgroup, and
/// 10,000 of them are most of the daemon's heap (issue 11).
#[test]
fn element_is_small() {
    assert_eq!(std::mem::size_of::<Element>(), 20);
}

#[test]
fn a_dynamic_set_in_bypass_is_two_sets_and_two_returns() {
    let cfg = Config::parse("version: 1\nsets:\n  r: {dynamic: true}\nbypass: ['@r']\n", "t.yaml").unwrap();
    let text = Ruleset::build(&cfg, &[]).render(&[]);
    for want in [
        "\tset r {\n\t\ttype ipv4_addr\n\t\tflags interval,timeout\n\t}\n",
        "\tset r6 {\n\t\ttype ipv6_addr\n\t\tflags interval,timeout\n\t}\n",
        "\t\tip6 daddr @bypass6 return\n\t\tip daddr @r return\n\t\tip6 daddr @r6 return\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn example_config_names_below_the_drop_slice_stay_dropped() {
    let drop = "/user.slice/user-1000.slice/user@1000.service/cgtproxy.slice/cgtproxy-drop.slice";
    let mut cgroups = desktop();
    cgroups.push(cg(&format!("{drop}/system.slice"), 30));
    cgroups.push(cg(&format!("{drop}/system.slice/mihomo.service"), 31));
    cgroups.push(cg(&format!("{drop}/cgtproxy-direct.slice/x.scope"), 32));
    cgroups.push(cg(&format!("{drop}/cgtproxy-direct.slice"), 33));
    // Children listed before their parent: the result is the same.
    cgroups.reverse();
    let rs = Ruleset::build(&example(), &cgroups);
    for id in [25, 30, 31, 32, 33] {
        assert_eq!(rs.elements[&id].verdict, Verdict::Drop, "id {id}");
    }
    assert_eq!(rs.elements[&11].verdict, Verdict::Direct, "the real proxy is direct");
}

#[test]
fn build_binds_below_drop_and_reject_in_any_order() {
    let cfg = Config::parse(
        "version: 1\nrules:\n  - {match: '^/a$', drop: true}\n  - {match: '^/a/r$', reject: true}\n  - {match: '^/q$', reject: true}\n  - {match: 'x', direct: true}\n",
        "t.yaml",
    )
    .unwrap();
    let cgroups = [
        cg("/a/u/x", 1),
        cg("/a-b/x", 2),
        cg("/a/r/x", 3),
        cg("/a", 4),
        cg("/a-b", 5),
        cg("/a/r", 6),
        cg("/a/u", 7),
        cg("/a.x", 8),
        cg("/q/x", 9),
        cg("/q", 10),
    ];
    let rs = Ruleset::build(&cfg, &cgroups);
    let v = |id| rs.elements.get(&id).map(|e| (e.verdict, e.rule));
    assert_eq!(v(1), Some((Verdict::Drop, Some(0))));
    assert_eq!(v(3), Some((Verdict::Drop, Some(0))), "below a drop, a reject rule gives drop");
    assert_eq!(v(6), Some((Verdict::Drop, Some(0))));
    assert_eq!(v(7), None, "unmatched: inherits in the kernel");
    assert_eq!(v(2), Some((Verdict::Direct, Some(3))), "/a-b is not below /a");
    assert_eq!(v(8), Some((Verdict::Direct, Some(3))), "/a.x is not below /a");
    assert_eq!(v(9), Some((Verdict::Reject, Some(2))));
}
