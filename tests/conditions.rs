//! Conditions on a rule (`protocol`, `port`, `family`, `destination`),
//! against the kernel with real traffic between two network namespaces:
//! a QUIC-style UDP port rejected while the same app's TCP is proxied,
//! IPv6 dropped while IPv4 goes direct, destinations in a dynamic set
//! direct while the rest is proxied, and cgroups appearing at run time
//! getting their tail (a shared one, and a new one sent incrementally).

mod common;
use common::*;

fn config(rel: &str) -> String {
    format!(
        "version: 1\n\
         sets:\n  direct-dst: {{dynamic: true}}\n\
         tproxies:\n  px: {{mark: 3000, port: 7893}}\n\
         rules:\n\
         \x20 - {{match: '^{rel}/ff', protocol: udp, port: 9999, reject: true}}\n\
         \x20 - {{match: '^{rel}/ff', tproxy: px}}\n\
         \x20 - {{match: '^{rel}/nov6$', family: ipv6, drop: true}}\n\
         \x20 - {{match: '^{rel}/nov6$', direct: true}}\n\
         \x20 - {{match: '^{rel}/game$', destination: ['@direct-dst'], direct: true}}\n\
         \x20 - {{match: '^{rel}/game$', tproxy: px}}\n\
         \x20 - {{match: '^{rel}/late$', protocol: tcp, port: '8000-8100', drop: true}}\n\
         \x20 - {{match: '^{rel}/late$', direct: true}}\n\
         \x20 - {{match: '^{rel}/early/deep$', protocol: udp, port: 9999, drop: true}}\n\
         \x20 - {{match: '^{rel}/early/deep$', direct: true}}\n"
    )
}

fn refused(got: &str) -> bool {
    ["ERROR Connection refused", "ERROR Operation not permitted"].contains(&got)
}

#[test]
fn conditions_split_an_apps_traffic_by_protocol_port_family_and_destination() {
    if !root("conditions_split_an_apps_traffic_by_protocol_port_family_and_destination") {
        return;
    }
    let bed = Testbed::new("cond");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("cond");
    let ff = cg.mkdir("ff");
    let nov6 = cg.mkdir("nov6");
    let game = cg.mkdir("game");
    // A tail one level deeper: the daemon numbers it before `late` (made
    // later), a fresh build after (it goes by level).
    cg.mkdir("early/deep");
    let (daemon, cfg) = start_daemon(&bed.local, &config(&cg.rel));
    let ask = |dir: &std::path::Path, proto: &str, addr: &str, port: u16| bed.client(dir, proto, addr, port, "t");

    // QUIC-style: UDP to 9999 is refused at once; TCP to the same port and
    // UDP to another are proxied; nothing reaches the remote's 9999.
    for addr in [REMOTE4, REMOTE6] {
        let got = ask(&ff, "udpc", addr, 9999);
        assert!(refused(&got), "ff udp {addr}:9999: {got}");
        let shown = if addr.contains(':') { format!("[{addr}]") } else { addr.to_owned() };
        assert_eq!(ask(&ff, "tcp", addr, 9999), format!("TPROXY 7893 {shown}:9999"), "ff tcp {addr}");
        assert_eq!(ask(&ff, "udp", addr, 8080), format!("TPROXY 7893 {shown}:8080"), "ff udp {addr}:8080");
    }
    assert_eq!(bed.packets_at_9999(), 0, "a packet of ff reached the remote's 9999");

    // IPv6 dropped, IPv4 direct.
    assert_eq!(ask(&nov6, "tcp", REMOTE4, 8080), "REMOTE t");
    assert_eq!(ask(&nov6, "udp", REMOTE4, 8080), "REMOTE t");
    assert!(!ask(&nov6, "tcp", REMOTE6, 8080).starts_with("REMOTE"), "IPv6 of nov6 left");
    assert!(!ask(&nov6, "udp", REMOTE6, 9999).starts_with("REMOTE"));
    assert_eq!(bed.packets_at_9999(), 0, "IPv6 of nov6 reached the remote");

    // A destination another program puts into the dynamic set goes direct
    // (new flows); the rest stays proxied.
    assert_eq!(ask(&game, "tcp", REMOTE4, 8080), format!("TPROXY 7893 {REMOTE4}:8080"));
    bed.local.sh(&format!("nft add element inet cgtproxy direct-dst {{ {REMOTE4} }}"));
    assert_eq!(ask(&game, "tcp", REMOTE4, 8080), "REMOTE t");
    assert_eq!(ask(&game, "udp", REMOTE4, 8080), "REMOTE t");
    assert_eq!(ask(&game, "tcp", REMOTE6, 8080), format!("TPROXY 7893 [{REMOTE6}]:8080"));
    bed.local.sh(&format!("nft add element inet cgtproxy direct-dst6 {{ {REMOTE6} }}"));
    assert_eq!(ask(&game, "tcp", REMOTE6, 8080), "REMOTE t");

    // A cgroup appearing at run time with the same rules shares the tail;
    // one with a new combination gets its chain in the incremental batch.
    let chains_before = bed.local.sh("nft list table inet cgtproxy").matches("chain tail-").count();
    let ff2 = cg.mkdir("ff2");
    let late = cg.mkdir("late");
    assert!(
        wait_until(5, || bed.local.sh("nft list table inet cgtproxy").matches("chain tail-").count()
            == chains_before + 1),
        "{}",
        bed.local.sh("nft list table inet cgtproxy")
    );
    assert!(refused(&ask(&ff2, "udpc", REMOTE4, 9999)));
    assert_eq!(ask(&ff2, "tcp", REMOTE4, 9999), format!("TPROXY 7893 {REMOTE4}:9999"));
    assert_eq!(ask(&late, "tcp", REMOTE4, 8080), "TIMEOUT", "tcp 8080 of late is dropped");
    assert_eq!(ask(&late, "tcp", REMOTE4, 9999), "REMOTE t");
    assert!(!daemon.output().contains("restored table"), "an incremental batch failed: {}", daemon.output());

    // explain and status say which rule takes which packets.
    let state = cfg.with_extension("state.json");
    let run = |args: &str| {
        bed.local.try_sh(&format!("CGTPROXY_STATE={} {} -c {} {args}", state.display(), bin(), cfg.display()))
    };
    let (ok, out) = run(&format!("explain {}/ff", cg.rel));
    assert!(ok, "{out}");
    assert!(out.contains("packets: udp dport 9999 → reject (rule 0); everything else → tproxy px (rule 1)"), "{out}");
    assert!(out.contains("conditional (tail-"), "{out}");
    let (ok, out) = run("status");
    assert!(ok, "{out}");
    assert!(out.contains("conditional: ipv6 → drop (rule 2); everything else → direct (rule 3)"), "{out}");
    // The kernel numbered the late tail after the others; a fresh build
    // numbers tails in tree order: print --diff compares them by rules.
    let (ok, out) = run("print --diff");
    assert!(ok, "a false difference: {out}");
    drop(daemon);
}

#[test]
fn dnsmasq_answers_send_a_destination_direct_under_a_conditional_rule() {
    if !root("dnsmasq_answers_send_a_destination_direct_under_a_conditional_rule") {
        return;
    }
    if !try_sh("command -v dnsmasq").0 {
        eprintln!("skipping dnsmasq_answers_send_a_destination_direct_under_a_conditional_rule: no dnsmasq");
        return;
    }
    let bed = Testbed::new("conddns");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("conddns");
    let game = cg.mkdir("game");
    let (_daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));
    assert_eq!(bed.client(&game, "tcp", REMOTE4, 8080, "t"), format!("TPROXY 7893 {REMOTE4}:8080"));
    let dnsmasq = |args: String| {
        Proc::spawn(&format!(
            "{} dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --user=root --pid-file= {args}",
            bed.local.enter()
        ))
    };
    let _upstream = dnsmasq(format!("--listen-address=127.0.0.2 --port=5300 --address=/example.test/{REMOTE4}"));
    let _front = dnsmasq(
        "--listen-address=127.0.0.3 --port=53 --server=127.0.0.2#5300 \
         --nftset=/example.test/4#inet#cgtproxy#direct-dst"
            .into(),
    );
    assert!(
        wait_until(5, || bed.local.try_sh(&format!("{} dnsq 127.0.0.3 53 example.test", helper())).1.contains(REMOTE4)),
        "dnsmasq did not answer"
    );
    assert!(wait_until(3, || bed.local.sh("nft list set inet cgtproxy direct-dst").contains(REMOTE4)));
    assert_eq!(bed.client(&game, "tcp", REMOTE4, 8080, "t"), "REMOTE t");
}

/// A tail none of whose rules takes a packet leaves it to the next
/// shallower level (the parent's verdict), in strict mode too (the cgroup
/// is known, so it is not held); a reload to a config without conditions
/// removes the tails.
#[test]
fn a_packet_no_rule_of_the_tail_takes_gets_the_parents_verdict_in_strict_mode() {
    if !root("a_packet_no_rule_of_the_tail_takes_gets_the_parents_verdict_in_strict_mode") {
        return;
    }
    let bed = Testbed::new("condst");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("condst");
    let kid = cg.mkdir("par/kid");
    let rel = &cg.rel;
    let (daemon, cfg) = start_daemon(
        &bed.local,
        &format!(
            "version: 1\nstrict: true\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  \
             - {{match: '^{rel}/par$', tproxy: px}}\n  - {{match: '^{rel}/par/kid$', protocol: udp, direct: true}}\n"
        ),
    );
    assert_eq!(bed.client(&kid, "udp", REMOTE4, 8080, "t"), "REMOTE t", "the kid's own rule takes UDP");
    assert_eq!(bed.client(&kid, "tcp", REMOTE4, 8080, "t"), format!("TPROXY 7893 {REMOTE4}:8080"), "TCP: the parent's");
    // Reload without conditions: no tails left, the kid unmatched follows its parent.
    std::fs::write(&*cfg, format!("version: 1\nstrict: true\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/par$', tproxy: px}}\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(wait_until(5, || daemon.output().contains("reloaded")), "{}", daemon.output());
    let table = bed.local.sh("nft list table inet cgtproxy");
    assert!(!table.contains("tail"), "{table}");
    assert_eq!(bed.client(&kid, "udp", REMOTE4, 8080, "t"), format!("TPROXY 7893 {REMOTE4}:8080"));
}
