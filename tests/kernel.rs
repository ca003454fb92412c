//! The ruleset as the kernel holds it, read back with the `nft` CLI (an
//! independent oracle), in a network namespace private to each test.

mod common;
use common::*;

use std::collections::HashMap;

use cgtproxy::cgroup::{self, Cgroup};
use cgtproxy::config::Config;
use cgtproxy::nft::Nft;
use cgtproxy::route::Routes;
use cgtproxy::ruleset::Ruleset;

fn example() -> Config {
    Config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("misc/config/example.yaml")).unwrap()
}

/// Put every `elements = { ... }` list one item per line, sorted, with
/// cgroup ids replaced by their paths: `nft` wraps lists at its own width,
/// lists hash maps in kernel order and shows a cgroup id as a number when
/// it cannot find the cgroup below /sys/fs/cgroup.
fn normalize(text: &str, ids: &HashMap<u64, String>) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(pos) = line.find("elements = {") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let indent = &line[..pos];
        let mut body = line[pos + "elements = {".len()..].to_owned();
        while !body.trim_end().ends_with('}') {
            body.push(' ');
            body.push_str(lines.next().expect("unterminated elements").trim());
        }
        let body = body.trim().trim_end_matches('}');
        let mut items: Vec<String> = body
            .split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|item| match item.split_once(" : ") {
                Some((k, v)) => {
                    // A number, or a path nft found below /sys/fs/cgroup
                    // (`unified/...` on hybrid systems).
                    let path = k.parse::<u64>().ok().and_then(|id| ids.get(&id)).or_else(|| {
                        let k = k.trim_matches('"');
                        ids.values().find(|p| k == p.trim_start_matches('/') || k.ends_with(p.as_str()))
                    });
                    match path {
                        Some(path) => format!("{:?} : {v}", path.trim_start_matches('/')),
                        None => item.to_owned(),
                    }
                }
                None => item.to_owned(),
            })
            .collect();
        items.sort();
        out.push_str(&format!("{indent}elements = {{\n"));
        for item in items {
            out.push_str(&format!("{indent}\t{item}\n"));
        }
        out.push_str(&format!("{indent}}}\n"));
    }
    out
}

fn list_table() -> String {
    sh("nft list table inet cgtproxy")
}

#[test]
fn kernel_listing_equals_rendered_ruleset() {
    if !root("kernel_listing_equals_rendered_ruleset") {
        return;
    }
    private_netns();
    let cgroups = TestCgroups::new("listing");
    cgroups.mkdir("user.slice/app");
    cgroups.mkdir("drop.slice/deep/er");
    cgroups.mkdir("other");
    let rel = &cgroups.rel;
    let cfg = Config::parse(
        &format!(
            "version: 1\n\
             bypass: [127.0.0.0/8, 192.168.0.0/16, 10.0.0.0/8, '::1', 'fe80::/10']\n\
             tproxies:\n\
             \x20 px: {{mark: 3000, port: 7893, dns-hijack: {{port: 1053, tcp: true, ip6: '::1'}}}}\n\
             \x20 px4: {{mark: 3001, port: 7894, no-ipv6: true, no-udp: true}}\n\
             \x20 pxd: {{mark: 3002, port: 7895, no-udp: true, dns-hijack: {{port: 1054}}}}\n\
             rules:\n\
             \x20 - {{match: '^{rel}/user\\.slice/app$', tproxy: px4}}\n\
             \x20 - {{match: '^{rel}/user\\.slice', tproxy: px}}\n\
             \x20 - {{match: '^{rel}/drop\\.slice/deep/er$', reject: true}}\n\
             \x20 - {{match: '^{rel}/drop\\.slice', drop: true}}\n\
             \x20 - {{match: '^{rel}$', direct: true}}\n"
        ),
        "listing.yaml",
    )
    .unwrap();
    let mut found = Vec::new();
    cgroup::scan_into(&cgroups.root, &cgroups.dir, &mut found).unwrap();
    let rs = Ruleset::build(&cfg, &found);
    assert_eq!(rs.elements.len(), 6, "all but {rel}/other");
    let ids: HashMap<u64, String> = found.iter().map(|c| (c.id, c.path.to_string())).collect();

    Nft::open().unwrap().apply_full(&rs).unwrap();
    let kernel = normalize(&list_table(), &ids);
    assert_eq!(kernel, normalize(&rs.render(&found), &ids), "kernel listing differs from the rendered ruleset");
    golden("kernel-listing.nft", &kernel.replace(rel.trim_start_matches('/'), "TEST"));
}

#[test]
fn stale_table_is_replaced_atomically() {
    if !root("stale_table_is_replaced_atomically") {
        return;
    }
    private_netns();
    // A table from a killed instance, with content we must not keep.
    sh("nft 'add table inet cgtproxy; add chain inet cgtproxy junk; add set inet cgtproxy bypass { type ipv4_addr; }'");
    let cfg = example();
    let rs = Ruleset::build(&cfg, &[Cgroup { path: "/user.slice/a".into(), id: 4242, level: 2 }]);
    let mut nft = Nft::open().unwrap();
    nft.apply_full(&rs).unwrap();
    nft.apply_full(&rs).unwrap(); // and again: no "file exists"
    let listing = list_table();
    assert!(!listing.contains("junk"), "{listing}");
    assert!(listing.contains("4242 : 0x00000bb8"), "{listing}");
    assert!(nft.table_exists().unwrap());
    assert!(nft.delete_table().unwrap());
    assert!(!nft.table_exists().unwrap());
    assert!(!nft.delete_table().unwrap(), "deleting twice is not an error");
    assert_eq!(sh("nft list ruleset").trim(), "");
}

#[test]
fn rejected_batch_changes_nothing() {
    if !root("rejected_batch_changes_nothing") {
        return;
    }
    private_netns();
    let cfg = example();
    let mut rs = Ruleset::build(&cfg, &[Cgroup { path: "/user.slice/a".into(), id: 7, level: 2 }]);
    let mut nft = Nft::open().unwrap();
    nft.apply_full(&rs).unwrap();
    let before = list_table();
    // Two tproxies with one name: the kernel refuses the second chain (it
    // exists), and with it the whole batch.
    rs.elements.get_mut(&7).unwrap().verdict = cgtproxy::ruleset::Verdict::Drop;
    let dup = rs.tproxies[0].clone();
    rs.tproxies.push(dup);
    let err = nft.apply_full(&rs).unwrap_err().to_string();
    assert!(err.contains("add chain inet cgtproxy mihomo") && err.contains("File exists"), "{err}");
    assert_eq!(list_table(), before, "a failed batch must leave the old table intact");
}

#[test]
fn many_elements_span_several_messages() {
    if !root("many_elements_span_several_messages") {
        return;
    }
    private_netns();
    let cfg = example();
    let cgroups: Vec<Cgroup> = (0..20_000u64)
        .map(|i| Cgroup { path: format!("/user.slice/a{i}").into(), id: 1_000_000 + i, level: 2 })
        .collect();
    let rs = Ruleset::build(&cfg, &cgroups);
    Nft::open().unwrap().apply_full(&rs).unwrap();
    let listing = sh("nft list map inet cgtproxy cgroup-class");
    assert_eq!(listing.matches(": 0x00000bb8").count(), 20_000);
}

#[test]
fn policy_routes_install_and_remove() {
    if !root("policy_routes_install_and_remove") {
        return;
    }
    private_netns();
    let mut routes = Routes::open().unwrap();
    assert!(!routes.present(&[3000, 3001], 300).unwrap());
    assert!(routes.present(&[], 300).unwrap(), "no tproxy: nothing to miss");
    routes.install(&[3000, 3001], 300).unwrap();
    routes.install(&[3000, 3001], 300).unwrap(); // idempotent
    assert!(routes.present(&[3000, 3001], 300).unwrap());
    for fam in ["-4", "-6"] {
        let rules = sh(&format!("ip {fam} rule show"));
        assert_eq!(rules.matches("fwmark 0xbb8 lookup 300").count(), 1, "{rules}");
        assert_eq!(rules.matches("fwmark 0xbb9 lookup 300").count(), 1, "{rules}");
        let table = sh(&format!("ip {fam} route show table 300"));
        assert!(table.contains("local default dev lo"), "{table}");
    }
    assert!(routes.remove(&[3000, 3001], 300).is_empty());
    assert!(routes.remove(&[3000, 3001], 300).is_empty(), "removing twice is fine");
    for fam in ["-4", "-6"] {
        assert!(!sh(&format!("ip {fam} rule show")).contains("lookup 300"));
        assert_eq!(sh(&format!("ip {fam} route show table 300")).trim(), "");
    }
    // Table numbers above 255 and below work alike.
    routes.install(&[1], 100).unwrap();
    assert!(sh("ip rule show").contains("fwmark 0x1 lookup 100"));
    assert!(routes.remove(&[1], 100).is_empty());
}

#[test]
fn strict_mode_listing_equals_rendered_ruleset() {
    if !root("strict_mode_listing_equals_rendered_ruleset") {
        return;
    }
    private_netns();
    let cgroups = TestCgroups::new("strict");
    cgroups.mkdir("a/b/c");
    cgroups.mkdir("d");
    let rel = &cgroups.rel;
    let cfg = Config::parse(
        &format!(
            "version: 1\nstrict: true\nstrict-depth: 4\ntproxies: {{p: {{mark: 1, port: 2}}}}\n\
             rules:\n  - {{match: '^{rel}/a/b$', tproxy: p}}\n  - {{match: '^{rel}/d', drop: true}}\n"
        ),
        "strict.yaml",
    )
    .unwrap();
    let mut found = Vec::new();
    cgroup::scan_into(&cgroups.root, &cgroups.dir, &mut found).unwrap();
    let rs = Ruleset::build(&cfg, &found);
    assert_eq!(rs.elements.len(), 5, "every cgroup is known in strict mode");
    let ids: HashMap<u64, String> = found.iter().map(|c| (c.id, c.path.to_string())).collect();
    let mut nft = Nft::open().unwrap();
    nft.apply_full(&rs).unwrap();
    assert_eq!(normalize(&list_table(), &ids), normalize(&rs.render(&found), &ids));
    let map = nft.cgroup_map().unwrap();
    assert_eq!(map.values().filter(|v| **v == cgtproxy::ruleset::Verdict::Continue).count(), 3);
    assert_eq!(map.values().filter(|v| **v == cgtproxy::ruleset::Verdict::Tproxy(1)).count(), 1);
    // Both rules of a level are found, the first one's handle kept.
    let handles = nft.level_handles().unwrap();
    assert_eq!(handles.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
}

/// Gateway mode: the inet chains and the bridge table (brouting, which
/// `nft` 1.0.6 cannot write but lists) go in as one batch and read back as
/// rendered; deleting the tables leaves nothing.
#[test]
fn gateway_listing_equals_rendered_ruleset() {
    if !root("gateway_listing_equals_rendered_ruleset") {
        return;
    }
    private_netns();
    let cfg = Config::parse(
        "version: 1\n\
         bypass: [127.0.0.0/8, '::1', 192.0.2.0/24]\n\
         counters: true\n\
         tproxies:\n\
         \x20 px: {mark: 3000, port: 7893, dns-hijack: {port: 1053, tcp: true, ip6: '::1'}}\n\
         \x20 px4: {mark: 3001, port: 7894, no-ipv6: true, no-udp: true}\n\
         gateway:\n\
         \x20 - {interface: 'br-*', tproxy: px}\n\
         \x20 - {source: [198.51.100.0/24, 203.0.113.0/25, '2001:db8:50::/64'], tproxy: px4}\n\
         \x20 - {interface: virbr0, source: [203.0.113.128/25], direct: true}\n\
         \x20 - {interface: eth1, drop: true}\n",
        "gateway.yaml",
    )
    .unwrap();
    let mut rs = Ruleset::build(&cfg, &[]);
    let mut nft = Nft::open().unwrap();
    // Kernels without nft_meta_bridge (CONFIG_NFT_BRIDGE_META) cannot
    // broute; the daemon then runs without the bridge table.
    rs.broute = nft.can_broute();
    if !rs.broute {
        eprintln!("NOTE gateway_listing_equals_rendered_ruleset: this kernel cannot broute; bridge table not checked");
    }
    nft.apply_full(&rs).unwrap();
    nft.apply_full(&rs).unwrap(); // a stale bridge table is replaced too
    let ids = HashMap::new();
    let kernel = normalize(&sh("nft list ruleset"), &ids);
    assert_eq!(kernel, normalize(&rs.render(&[]), &ids), "kernel listing differs from the rendered ruleset");
    let inet_only = kernel.split("table bridge").next().unwrap().to_owned();
    golden("kernel-listing-gateway.nft", &inet_only);
    assert!(nft.delete_table().unwrap());
    assert_eq!(nft.delete_bridge_table().unwrap(), rs.broute);
    assert!(!nft.delete_bridge_table().unwrap(), "deleting twice is not an error");
    // A bridge table left by an instance with gateway entries, on any
    // kernel: found by asking, then deleted.
    sh("nft add table bridge cgtproxy");
    assert!(nft.bridge_table_exists().unwrap());
    assert!(nft.delete_bridge_table().unwrap());
    assert!(!nft.bridge_table_exists().unwrap());
    assert_eq!(sh("nft list ruleset").trim(), "");
}

/// Conditional rules (issue 20): the `tails` map, its dispatch rule at
/// every level and the `tail-N` chains read back as rendered, every kind
/// of condition included.
#[test]
fn conditions_listing_equals_rendered_ruleset() {
    if !root("conditions_listing_equals_rendered_ruleset") {
        return;
    }
    private_netns();
    let cgroups = TestCgroups::new("conds");
    cgroups.mkdir("app/firefox");
    cgroups.mkdir("app/game");
    cgroups.mkdir("app/old");
    cgroups.mkdir("app/mixed/child");
    let rel = &cgroups.rel;
    let cfg = Config::parse(&conditions_config(rel), "conditions.yaml").unwrap();
    let mut found = Vec::new();
    cgroup::scan_into(&cgroups.root, &cgroups.dir, &mut found).unwrap();
    let rs = Ruleset::build(&cfg, &found);
    let ids: HashMap<u64, String> = found.iter().map(|c| (c.id, c.path.to_string())).collect();
    Nft::open().unwrap().apply_full(&rs).unwrap();
    let kernel = normalize(&list_table(), &ids);
    assert_eq!(kernel, normalize(&rs.render(&found), &ids), "kernel listing differs from the rendered ruleset");
    golden("kernel-listing-conditions.nft", &kernel.replace(rel.trim_start_matches('/'), "TEST"));
}

/// A config with every kind of condition, for the cgroups of
/// [`conditions_listing_equals_rendered_ruleset`].
fn conditions_config(rel: &str) -> String {
    format!(
        "version: 1\n\
         sets:\n\
         \x20 games: [203.0.113.0/24, '2001:db8:1::/48']\n\
         \x20 dyn: {{dynamic: true}}\n\
         tproxies:\n\
         \x20 px: {{mark: 3000, port: 7893}}\n\
         rules:\n\
         \x20 - {{match: '^{rel}/app/firefox$', protocol: udp, port: 443, reject: true}}\n\
         \x20 - {{match: '^{rel}/app/firefox$', tproxy: px}}\n\
         \x20 - {{match: '^{rel}/app/game$', destination: ['@games', '@dyn', 192.0.2.7], direct: true}}\n\
         \x20 - {{match: '^{rel}/app/game$', protocol: [tcp, udp], port: [80, 443, '8000-8100'], tproxy: px}}\n\
         \x20 - {{match: '^{rel}/app/game$', family: ipv6, drop: true}}\n\
         \x20 - {{match: '^{rel}/app/old$', protocol: [icmp, icmpv6], drop: true}}\n\
         \x20 - {{match: '^{rel}/app/old$', family: ipv4, protocol: tcp, port: 25, reject: true}}\n\
         \x20 - {{match: '^{rel}/app/mixed', port: '6000-6010', drop: true}}\n\
         \x20 - {{match: '^{rel}/app/mixed/child$', direct: true}}\n\
         \x20 - {{match: '^{rel}/app', tproxy: px}}\n"
    )
}
