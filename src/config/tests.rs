use super::*;
use std::net::Ipv4Addr;

const MINIMAL: &str = "version: 1\n";

fn err(text: &str) -> String {
    Config::parse(text, "test.yaml").unwrap_err().to_string()
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/config/example.yaml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.route_table, 300);
    assert_eq!(cfg.cgroup_root, CgroupRoot::Auto);
    let mihomo = &cfg.tproxies["mihomo"];
    assert_eq!((mihomo.mark, mihomo.port), (3000, 7893));
    assert_eq!(mihomo.dns_hijack, Some(DnsHijack { ip: Ipv4Addr::LOCALHOST, ip6: None, port: 1053, tcp: false }));
    let path = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-com.parsecgaming.parsec@3.service";
    assert_eq!(cfg.classify(path).unwrap().target, Target::Direct);
    let path = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Evince@12.service";
    assert_eq!(cfg.classify(path).unwrap().target, Target::Tproxy("mihomo".into()));
    assert!(cfg.classify("/system.slice/sshd.service").is_none());
    assert_eq!(cfg.classify("/system.slice/mihomo.service").unwrap().index, 0);
    // Names a user can give cgroups in their own subtree do not take the
    // proxy's `direct` (the example's rules are anchored).
    let user = "/user.slice/user-1000.slice/user@1000.service";
    for path in
        [format!("{user}/system.slice/mihomo.service"), format!("{user}/app.slice/x/system.slice/mihomo.service")]
    {
        assert_eq!(cfg.classify(&path).unwrap().target, Target::Tproxy("mihomo".into()), "{path}");
    }
    let path = format!("{user}/app.slice/x/app.slice/app-gnome-com.parsecgaming.parsec@3.service");
    assert_eq!(cfg.classify(&path).unwrap().target, Target::Tproxy("mihomo".into()), "{path}");
}

#[test]
fn packaged_default_config_is_all_direct() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/config/default.yaml");
    let cfg = Config::load(&path).unwrap();
    assert!(cfg.rules.is_empty() && cfg.tproxies.is_empty());
}

#[test]
fn old_go_example_loads() {
    // The Go implementation's example: block scalars, string version.
    let text = r#"
version: "1"
cgroup-root: AUTO
route-table: 300
bypass:
  - 127.0.0.0/8
  - ::1
tproxies:
  clash-meta:
    mark: 3000
    port: 7893
    dns-hijack:
      ip: 127.0.0.1
      port: 53
rules:
  - match: |-
      \/system\.slice\/clash-meta\.service
    direct: true
  - match: |-
      \/user\.slice\/user-\d+\.slice/user@\d+\.service\/cgtproxy\.slice\/cgtproxy-drop\.slice\/.*
    drop: true
  - match: |-
      \/.*
    tproxy: clash-meta
"#;
    let cfg = Config::parse(text, "old.yaml").unwrap();
    assert_eq!(cfg.rules.len(), 3);
    assert_eq!(cfg.bypass.len(), 2);
    assert_eq!(cfg.tproxies["clash-meta"].dns_hijack.as_ref().unwrap().port, 53);
    let drop = "/user.slice/user-1000.slice/user@1000.service/cgtproxy.slice/cgtproxy-drop.slice/run-u2.service";
    assert_eq!(cfg.classify(drop).unwrap().target, Target::Drop);
    // Go's \d is ASCII: Arabic-Indic digits do not make a user slice.
    let odd = "/user.slice/user-١.slice/user@1000.service/cgtproxy.slice/cgtproxy-drop.slice/x";
    assert_eq!(cfg.classify(odd).unwrap().index, 2);
}

#[test]
fn defaults() {
    let cfg = Config::parse(MINIMAL, "m.yaml").unwrap();
    assert_eq!(cfg.route_table, DEFAULT_ROUTE_TABLE);
    assert_eq!(cfg.cgroup_root, CgroupRoot::Auto);
    assert!(cfg.rules.is_empty() && cfg.tproxies.is_empty() && !cfg.strict);
    let cfg =
        Config::parse("version: 1\ntproxies:\n  p:\n    mark: 1\n    port: 2\n    dns-hijack: {}\n", "m.yaml").unwrap();
    assert_eq!(
        cfg.tproxies["p"].dns_hijack,
        Some(DnsHijack { ip: Ipv4Addr::LOCALHOST, ip6: None, port: 53, tcp: false })
    );
}

#[test]
fn unknown_tproxy_is_named() {
    let e = err("version: 1\nrules:\n  - match: x\n    tproxy: nope\n");
    assert!(e.contains("line 4") && e.contains("rules[0]") && e.contains("\"nope\""), "{e}");
}

#[test]
fn zero_or_two_targets() {
    let e = err("version: 1\nrules:\n  - match: a\n    direct: true\n  - match: x\n");
    assert!(e.contains("rules[1]") && e.contains("no target") && e.contains("line 5"), "{e}");
    let e = err("version: 1\nrules:\n  - match: x\n    direct: true\n    drop: true\n");
    assert!(e.contains("rules[0]") && e.contains("2 targets (direct, drop)"), "{e}");
    // `direct: false` is no target at all.
    let e = err("version: 1\nrules:\n  - match: x\n    direct: false\n");
    assert!(e.contains("no target"), "{e}");
}

#[test]
fn bad_regex() {
    let e = err("version: 1\nrules:\n  - match: 'a(b'\n    direct: true\n");
    assert!(e.contains("rules[0]") && e.contains("bad regex \"a(b\"") && e.contains("line 3"), "{e}");
}

#[test]
fn bad_ports() {
    for (port, shown) in [("0", "0"), ("65536", "65536"), ("-1", "-1")] {
        let e = err(&format!("version: 1\ntproxies:\n  p:\n    mark: 1\n    port: {port}\n"));
        assert!(e.contains(&format!("tproxies.p.port {shown} is not a port")) && e.contains("line 5"), "{e}");
    }
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 1\n    port: 1\n    dns-hijack:\n      port: 70000\n");
    assert!(e.contains("dns-hijack.port 70000"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 1\n");
    assert!(e.contains("missing `port`"), "{e}");
}

#[test]
fn bad_marks() {
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 0\n    port: 1\n");
    assert!(e.contains("tproxies.p.mark 0"), "{e}");
    let e = err("version: 1\ntproxies:\n  a:\n    mark: 7\n    port: 1\n  b:\n    mark: 7\n    port: 2\n");
    assert!(e.contains("tproxies.b.mark 7 is already the mark of tproxies.a") && e.contains("line 7"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    port: 1\n");
    assert!(e.contains("missing `mark`"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 0x43475402\n    port: 1\n");
    assert!(e.contains("reserved by cgtproxy"), "{e}");
}

#[test]
fn bad_addresses() {
    let e = err("version: 1\nbypass:\n  - 10.0.0.0/8\n  - 300.1.1.1\n");
    assert!(e.contains("bypass[1]") && e.contains("300.1.1.1") && e.contains("line 4"), "{e}");
    let e = err("version: 1\nbypass: [10.0.0.0/40]\n");
    assert!(e.contains("prefix length"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 1\n    port: 1\n    dns-hijack:\n      ip: ::1\n");
    assert!(e.contains("dns-hijack.ip \"::1\" is not an IPv4 address"), "{e}");
}

#[test]
fn wrong_version() {
    assert!(err("version: 2\n").contains("unsupported version"));
    assert!(err("route-table: 1\n").contains("missing `version`"));
}

#[test]
fn cgroup_root_and_table() {
    assert!(err("version: 1\ncgroup-root: relative/path\n").contains("absolute path"));
    let cfg = Config::parse("version: 1\ncgroup-root: /sys/fs/cgroup\n", "x").unwrap();
    assert_eq!(cfg.cgroup_root, CgroupRoot::Path("/sys/fs/cgroup".into()));
    assert!(err("version: 1\nroute-table: 254\n").contains("reserved"));
    assert!(err("version: 1\nroute-table: -3\n").contains("route-table -3"));
}

#[test]
fn unknown_keys_name_the_line() {
    let e = err("version: 1\nroute-tabel: 300\n");
    assert!(e.contains("line 2 column 1") && e.contains("route-tabel"), "{e}");
    let e = err("version: 1\nrules:\n  - match: x\n    direkt: true\n");
    assert!(e.contains("direkt") && e.contains("line 4"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 1\n    port: 2\n    no-tcp: true\n");
    assert!(e.contains("no-tcp"), "{e}");
}

#[test]
fn syntax_error_names_the_file() {
    let e = err("version: [\n");
    assert!(e.starts_with("config file test.yaml") && e.contains("line 1"), "{e}");
}

#[test]
fn chain_name_collisions() {
    let e = err("version: 1\ntproxies:\n  prerouting:\n    mark: 1\n    port: 1\n");
    assert!(e.contains("collides"), "{e}");
    let e = err("version: 1\ntproxies:\n  a-DNS:\n    mark: 1\n    port: 1\n  a:\n    mark: 2\n    port: 2\n");
    assert!(e.contains("collides"), "{e}");
    let e = err("version: 1\ntproxies:\n  'a b':\n    mark: 1\n    port: 1\n");
    assert!(e.contains("name must be"), "{e}");
}

#[test]
fn missing_default_file_path() {
    // SAFETY: tests in this module do not read the variable concurrently.
    unsafe { std::env::set_var("CONFIGURATION_DIRECTORY", "/etc/x:/etc/y") };
    assert_eq!(default_path(), PathBuf::from("/etc/x/config.yaml"));
    // SAFETY: as above.
    unsafe { std::env::remove_var("CONFIGURATION_DIRECTORY") };
    assert_eq!(default_path(), PathBuf::from(DEFAULT_PATH));
}

#[test]
fn reject_target() {
    let cfg = Config::parse("version: 1\nrules:\n  - {match: x, reject: true}\n", "r.yaml").unwrap();
    assert_eq!(cfg.rules[0].target, Target::Reject);
    let e = err("version: 1\nrules:\n  - {match: x, reject: true, drop: true}\n");
    assert!(e.contains("2 targets (drop, reject)"), "{e}");
    let e = err("version: 1\ntproxies:\n  p:\n    mark: 0x43475403\n    port: 1\n");
    assert!(e.contains("reserved by cgtproxy"), "{e}");
}

const GW_HEAD: &str = "version: 1\ntproxies:\n  mihomo: {mark: 3000, port: 7893}\n";

#[test]
fn gateway_issue_example_parses() {
    let text = format!(
        "{GW_HEAD}gateway:\n  - interface: \"br-*\"\n    tproxy: mihomo\n  - source: [192.168.50.0/24, \"fd00:50::/64\"]\n    tproxy: mihomo\n  - interface: virbr0\n    source: [192.168.122.0/24]\n    direct: true\n  - interface: eth1\n    drop: true\n"
    );
    let cfg = Config::parse(&text, "test.yaml").unwrap();
    let g = &cfg.gateway;
    assert_eq!(g.len(), 4);
    assert_eq!(g[0].interface, Some(Iface::Prefix("br-".into())));
    assert_eq!((g[0].index, g[0].line), (0, 5));
    assert_eq!(g[1].source.len(), 2);
    assert_eq!(g[1].source4().len(), 1);
    assert_eq!(g[2].target, Target::Direct);
    assert_eq!(g[3].target, Target::Drop);
    assert_eq!(g[3].interface, Some(Iface::Exact("eth1".into())));
    // first match wins
    let from = |a: &str, i: &str| g.iter().find(|e| e.matches(a.parse().unwrap(), Some(i))).map(|e| e.index);
    assert_eq!(from("192.168.50.7", "br-1234"), Some(0));
    assert_eq!(from("192.168.50.7", "eth1"), Some(1));
    assert_eq!(from("192.168.122.9", "virbr0"), Some(2));
    assert_eq!(from("192.168.123.9", "virbr0"), None);
    assert_eq!(from("203.0.113.1", "eth1"), Some(3));
    // configs without it behave as today
    assert!(Config::parse(GW_HEAD, "t").unwrap().gateway.is_empty());
}

/// Each gateway error names the entry and its line and column.
#[test]
fn gateway_errors_have_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        ("  - interface: eth0\n    tproxy: nope\n", "line 6 column 13", "gateway[0]: tproxy \"nope\" is not defined"),
        ("  - interface: eth0\n", "line 5 column 5", "gateway[0]: no target"),
        ("  - interface: eth0\n    direct: true\n    drop: true\n", "line 5 column 5", "gateway[0]: 2 targets"),
        ("  - direct: true\n", "line 5 column 5", "gateway[0]: no condition"),
        (
            "  - {interface: eth0, direct: true}\n  - source: [10.0.0.0/33]\n    drop: true\n",
            "line 6 column 14",
            "gateway[1].source[0]",
        ),
        ("  - source: [10.0.0.1, nonsense]\n    drop: true\n", "line 5 column 24", "\"nonsense\" is not an IPv4/IPv6"),
        ("  - source: []\n    drop: true\n", "line 5 column 13", "`source` is empty"),
        ("  - interface: averyveryverylongname\n    drop: true\n", "line 5 column 16", "longer than 15 bytes"),
        ("  - interface: \"br*x\"\n    drop: true\n", "line 5 column 16", "cannot match"),
        ("  - interface: \"eth 0\"\n    drop: true\n", "line 5 column 16", "cannot match"),
        ("  - interface: \"*\"\n    drop: true\n", "line 5 column 16", "matches every interface"),
        ("  - interface: eth0\n    drop: true\n    iface: x\n", "line 7", "iface"),
    ];
    for (entry, at, what) in cases {
        let e = err(&format!("{GW_HEAD}gateway:\n{entry}"));
        assert!(e.contains(at) && e.contains(what), "want {at:?} and {what:?} in: {e}");
    }
    // A 15-byte name is fine, and so is a 15-byte prefix.
    let ok = format!(
        "{GW_HEAD}gateway:\n  - {{interface: abcdefghijklmno, drop: true}}\n  - {{interface: \"abcdefghijklmno*\", drop: true}}\n"
    );
    assert!(Config::parse(&ok, "t").is_ok());
}

#[test]
fn gateway_chain_names_are_reserved() {
    let e = err("version: 1\ntproxies:\n  gateway: {mark: 1, port: 1}\n");
    assert!(e.contains("collides"), "{e}");
    let e = err("version: 1\ntproxies:\n  a-GW: {mark: 1, port: 1}\n  a: {mark: 2, port: 2}\n");
    assert!(e.contains("collides"), "{e}");
}

#[test]
fn load_refuses_what_is_not_a_bounded_regular_file() {
    let dir = std::env::temp_dir().join(format!("cgtproxy-config-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let load_err = |p: &Path| Config::load(p).unwrap_err().to_string();
    let fifo = dir.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load_err(&fifo);
    assert!(e.contains(&fifo.display().to_string()) && e.contains("a FIFO"), "{e}");
    assert!(load_err(Path::new("/dev/zero")).contains("/dev/zero: a character device"));
    assert!(load_err(&dir).contains("a directory"));
    let big = dir.join("big.yaml");
    std::fs::write(&big, format!("version: 1\n#{}\n", " ".repeat(limits::MAX_CONFIG_BYTES as usize))).unwrap();
    assert!(load_err(&big).contains("larger than 1048576 bytes"));
    let ok = dir.join("ok.yaml");
    std::fs::write(&ok, format!("version: 1\n#{}\n", " ".repeat(limits::MAX_CONFIG_BYTES as usize - 20))).unwrap();
    Config::load(&ok).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_echo_little_of_the_input() {
    let long = "q".repeat(20_000);
    for text in [
        format!("version: 1\nrules: [{long} : : [\n"),
        format!("version: 1\ncgroup-root: {long}\n"),
        format!("version: 1\nbypass: ['{long}']\n"),
        format!("version: 1\nrules:\n  - {{match: '({}', direct: true}}\n", "q".repeat(4000)),
        format!("version: 1\nrules:\n  - {{match: '{long}', direct: true}}\n"),
        format!("version: 1\ngateway:\n  - {{interface: '{long}', direct: true}}\n"),
    ] {
        let e = err(&text);
        assert!(e.len() <= 600 && e.contains("test.yaml") && e.contains("line "), "{} bytes: {e}", e.len());
        assert!(!e.contains(&"q".repeat(101)), "{e}");
    }
    assert_eq!(limits::clip("abc"), "abc");
    assert_eq!(limits::clip(&"é".repeat(150)).chars().count(), 101);
    assert!(limits::cap("é".repeat(400)).len() <= limits::MAX_MESSAGE_BYTES + 3);
}

#[test]
fn nft_set_errors_name_the_line() {
    let e = err("version: 1\nrules:\n  - {match: a, direct: true}\n  - {match: b, direct: true, nft-set: filter:x}\n");
    assert!(e.contains("line 4") && e.contains("rules[1]") && e.contains("FAMILY:TABLE:SET"), "{e}");
    let cfg = Config::parse(
        "version: 1\nrules:\n  - {match: b, direct: true, nft-set: [ip:t:a, ip:t:a, inet:f:b]}\n",
        "t.yaml",
    )
    .unwrap();
    let sets: Vec<String> = cfg.rules[0].nft_sets.iter().map(ToString::to_string).collect();
    assert_eq!(sets, ["ip:t:a", "inet:f:b"], "listed once each, in order");
}

#[test]
fn named_sets_are_validated_and_resolved_in_bypass() {
    let cfg = Config::parse(
        "version: 1\nsets:\n  lan: [10.0.0.0/8]\n  dns: {dynamic: true}\nbypass: [127.0.0.0/8, '@lan', '@dns', '@dns']\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(cfg.bypass.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.0/8", "10.0.0.0/8"]);
    assert_eq!(cfg.bypass_sets, ["dns"]);
    let e = err("version: 1\nsets:\n  a: [1.2.3.4]\nbypass: ['@b']\n");
    assert!(e.contains("line 4") && e.contains("no set \"b\" in `sets` (known: a)"), "{e}");
    let e = err("version: 1\nsets:\n  x: {dynamic: true}\n  x6: {dynamic: true}\n");
    assert!(e.contains("sets.x6") && e.contains("collides with sets.x"), "{e}");
    let e = err("version: 1\nsets:\n  bypass: {dynamic: true}\n");
    assert!(e.contains("collides with a built-in set"), "{e}");
    // Gateway mode's sets of the host's own networks: `local-nets` and its
    // IPv6 set `local-nets6` are taken as well.
    let e = err("version: 1\nsets:\n  local-nets: {dynamic: true}\n");
    assert!(e.contains("sets.local-nets") && e.contains("collides with a built-in set"), "{e}");
    let e = err("version: 1\nsets:\n  9x: [1.2.3.4]\n");
    assert!(e.contains("starting with a letter"), "{e}");
    let e = err("version: 1\nsets:\n  a: [1.2.3.999]\n");
    assert!(e.contains("sets.a: [0]"), "{e}");
}

#[test]
fn conditions_are_validated_with_the_rule_and_line() {
    let err = |rules: &str| {
        let text = format!(
            "version: 1\nsets: {{d: {{dynamic: true}}}}\ntproxies: {{p: {{mark: 1, port: 2}}}}\nrules:\n{rules}"
        );
        Config::parse(&text, "c.yaml").unwrap_err().to_string()
    };
    let e = err("  - {match: '^/a', protocol: icmp, port: 443, drop: true}\n");
    assert!(e.contains("line 5") && e.contains("rules[0]: `port` needs tcp or udp"), "{e}");
    let e = err("  - {match: '^/a', protocol: icmp, family: ipv6, drop: true}\n");
    assert!(e.contains("rules[0]: icmp never meets `family: ipv6` (use icmpv6)"), "{e}");
    let e = err("  - {match: '^/a', destination: ['@nope'], drop: true}\n");
    assert!(e.contains("destination[0]: no set \"nope\" in `sets` (known: d)"), "{e}");
    let e = err("  - {match: '^/a', port: '90-80', drop: true}\n");
    assert!(e.contains("ends before it starts"), "{e}");
    let e = err("  - {match: '^/a', port: 0, drop: true}\n");
    assert!(e.contains("port 0 is not in 1..=65535"), "{e}");
    let e = err("  - {match: '^/a', protocol: sctp, drop: true}\n");
    assert!(e.contains("protocol \"sctp\" is not tcp, udp, icmp or icmpv6"), "{e}");
    let e = err("  - {match: '^/a', family: ipv6, destination: [192.0.2.0/24], drop: true}\n");
    assert!(e.contains("no destination of `family: ipv6`"), "{e}");
    let e = err("  - {match: '^/a', family: ip4, drop: true}\n");
    assert!(e.contains("family \"ip4\" is not ipv4 or ipv6"), "{e}");
    let e = err("  - {match: '^/a', destination: [], drop: true}\n");
    assert!(e.contains("`destination` is an empty list"), "{e}");
    // Tail classes are reserved once a rule has conditions.
    let text = "version: 1\ntproxies: {p: {mark: 0x43475501, port: 2}}\nrules:\n  - {match: '^/a', protocol: tcp, tproxy: p}\n";
    assert!(
        Config::parse(text, "c.yaml").unwrap_err().to_string().contains("reserved by cgtproxy for conditional rules")
    );
    let text = "version: 1\ntproxies: {p: {mark: 0x43475501, port: 2}}\nrules:\n  - {match: '^/a', tproxy: p}\n";
    assert!(Config::parse(text, "c.yaml").is_ok(), "no conditions, no reserved range");
}

#[test]
fn a_port_alone_means_tcp_and_udp_and_static_sets_are_expanded() {
    let cfg = Config::parse(
        "version: 1\nsets: {lan: [10.0.0.0/8], d: {dynamic: true}}\nrules:\n  \
         - {match: '^/a', port: [443, '8000-8100', 80], destination: ['@lan', '@d', '192.0.2.1'], direct: true}\n  \
         - {match: '^/a', drop: true}\n",
        "c.yaml",
    )
    .unwrap();
    let c = cfg.rules[0].conditions.as_ref().unwrap();
    assert_eq!(c.protocols, [crate::config::Proto::Tcp, crate::config::Proto::Udp]);
    assert_eq!(c.ports, [(80, 80), (443, 443), (8000, 8100)]);
    let d = c.destination.as_ref().unwrap();
    assert_eq!(d.sets, ["d"]);
    assert_eq!(d.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "192.0.2.1"]);
    assert!(cfg.rules[1].conditions.is_none());
}

#[test]
fn a_gateway_source_takes_static_sets() {
    let text = |src: &str| {
        format!(
            "version: 1\nsets: {{lan: [192.168.50.0/24, 'fd00:50::/64'], d: {{dynamic: true}}}}\n\
             tproxies: {{p: {{mark: 1, port: 2}}}}\ngateway:\n  - {{source: {src}, tproxy: p}}\n"
        )
    };
    let cfg = Config::parse(&text("['@lan', 10.0.0.1]"), "g.yaml").unwrap();
    let s: Vec<String> = cfg.gateway[0].source.iter().map(ToString::to_string).collect();
    assert_eq!(s, ["192.168.50.0/24", "fd00:50::/64", "10.0.0.1"]);
    let e = Config::parse(&text("['@d']"), "g.yaml").unwrap_err().to_string();
    assert!(e.contains("gateway[0].source[0]: set \"d\" is dynamic"), "{e}");
    let e = Config::parse(&text("['@x']"), "g.yaml").unwrap_err().to_string();
    assert!(e.contains("no set \"x\" in `sets` (known: d, lan)"), "{e}");
}
