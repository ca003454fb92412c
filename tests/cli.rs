//! The command line: exit codes, messages, and `print` as real `nft -f` input.

mod common;
use common::*;

#[test]
fn bad_config_changes_nothing_and_fails() {
    if !root("bad_config_changes_nothing_and_fails") {
        return;
    }
    let ns = NetNs::new("badcfg");
    let path = TempFile(std::env::temp_dir().join(format!("cgtproxy-bad-{}.yaml", std::process::id())));
    std::fs::write(&*path, "version: 1\ntproxies:\n  p: {mark: 1, port: 70000}\n").unwrap();
    let (ok, out) = ns.try_sh(&format!("{} -c {}", bin(), path.display()));
    assert!(!ok, "a bad config must exit non-zero");
    assert!(out.contains("line 3") && out.contains("tproxies.p.port 70000"), "{out}");
    assert_eq!(ns.sh("nft list ruleset").trim(), "");
    assert!(!ns.sh("ip rule show").contains("fwmark"));
    let (ok, out) = ns.try_sh(&format!("{} check config -c {}", bin(), path.display()));
    assert!(!ok && out.contains("70000"), "{out}");
    let (ok, out) = ns.try_sh(&format!("{} -c /nonexistent/cgtproxy.yaml", bin()));
    assert!(!ok && out.contains("/nonexistent/cgtproxy.yaml"), "an explicit missing file is an error: {out}");
}

#[test]
fn check_commands() {
    if !root("check_commands") {
        return;
    }
    let ns = NetNs::new("check");
    let example = format!("{}/misc/config/example.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = ns.sh(&format!("{} check config -c {example}", bin()));
    assert!(out.contains("is valid") && out.contains("tproxy mihomo: mark 0xbb8, port 7893"), "{out}");
    let out = ns.sh(&format!("{} check permission -c {example}", bin()));
    assert!(out.contains("CAP_NET_ADMIN: present") && out.contains("kernel: accepted"), "{out}");
    assert_eq!(ns.sh("nft list ruleset").trim(), "", "the probe leaves nothing");
    // Without CAP_NET_ADMIN (capsh drops it from the bounding set and
    // effective set of the child).
    if try_sh("command -v setpriv").0 {
        let (ok, out) = ns.try_sh(&format!(
            "setpriv --inh-caps=-all --bounding-set=-net_admin {} check permission -c {example}",
            bin()
        ));
        assert!(!ok && out.contains("missing CAP_NET_ADMIN"), "{out}");
    }
    // The built-in default when the default file is missing.
    let out = ns.sh(&format!("CONFIGURATION_DIRECTORY=/nonexistent {} check config 2>&1", bin()));
    assert!(out.contains("built-in default"), "{out}");
    let out = sh(&format!("{} --version", bin()));
    assert!(out.starts_with("cgtproxy "), "{out}");
}

#[test]
fn print_is_nft_input_equal_to_what_the_daemon_applies() {
    if !root("print_is_nft_input_equal_to_what_the_daemon_applies") {
        return;
    }
    let cg = TestCgroups::new("print");
    cg.mkdir("app/x");
    cg.mkdir("off");
    // In a private mount namespace cgroup2 is bound at /sys/fs/cgroup, where
    // `nft` resolves cgroupsv2 paths (as on most desktops).
    let rel = cg.rel.clone();
    let cfg = format!(
        "version: 1\ncounters: true\ncgroup-root: /sys/fs/cgroup\nbypass: [127.0.0.0/8]\ntproxies:\n  px: {{mark: 7, port: 7893, dns-hijack: {{}}}}\n\
         rules:\n  - {{match: '^{rel}/app', tproxy: px}}\n  - {{match: '^{rel}/off', drop: true}}\n"
    );
    let path = TempFile(std::env::temp_dir().join(format!("cgtproxy-print-{}.yaml", std::process::id())));
    std::fs::write(&*path, cfg).unwrap();
    let cgroup2 = cg.root.display().to_string();
    let script = format!(
        "set -e; mount --make-rprivate /; \
         [ {cgroup2} = /sys/fs/cgroup ] || mount --bind {cgroup2} /sys/fs/cgroup; \
         ip link set lo up; \
         {bin} print -c {cfg} > /tmp/cgtproxy-print-$$.nft; \
         nft -f /tmp/cgtproxy-print-$$.nft; rm /tmp/cgtproxy-print-$$.nft; \
         nft list table inet cgtproxy > /tmp/cgtproxy-a-$$; nft delete table inet cgtproxy; \
         {bin} -c {cfg} --log-level warn & pid=$!; \
         for i in $(seq 100); do nft list table inet cgtproxy >/dev/null 2>&1 && break; sleep 0.05; done; sleep 0.2; \
         nft list table inet cgtproxy > /tmp/cgtproxy-b-$$; kill $pid; wait $pid; \
         diff /tmp/cgtproxy-a-$$ /tmp/cgtproxy-b-$$ && echo SAME; cat /tmp/cgtproxy-a-$$; rm /tmp/cgtproxy-a-$$ /tmp/cgtproxy-b-$$",
        bin = bin(),
        cfg = path.display()
    );
    let (ok, out) = try_sh(&format!("unshare -m -n sh -c {}", shell_quote(&script)));
    assert!(ok && out.contains("SAME"), "{out}");
    let app = format!("\"{}/app/x\" counter packets 0 bytes 0 : 0x00000007", rel.trim_start_matches('/'));
    assert!(out.contains(&app), "{out}");
}

#[test]
fn failed_start_leaves_nothing() {
    if !root("failed_start_leaves_nothing") {
        return;
    }
    // `lo` is down: the IPv6 local route cannot be added after the IPv4
    // one was. What was added must be removed again.
    let ns = NetNs::new("lodown");
    ns.sh("ip link set lo down");
    let example = format!("{}/misc/config/example.yaml", env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = ns.try_sh(&format!("{} -c {example}", bin()));
    assert!(!ok, "{out}");
    assert!(out.contains("local default dev lo table 300") && out.contains("Network is down"), "{out}");
    assert_eq!(ns.sh("nft list ruleset").trim(), "");
    assert!(!ns.sh("ip rule show").contains("fwmark"), "rules left behind");
    assert_eq!(ns.sh("ip route show table all | grep -c 'table 300' || true").trim(), "0");
}
