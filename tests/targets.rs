//! The `reject` target and DNS hijack of a local stub resolver, through two
//! test hosts.

mod common;
use common::*;

fn config(rel: &str) -> String {
    format!(
        "version: 1\n\
         bypass: [127.0.0.0/8, '::1', 192.0.2.0/24, '2001:db8::/64']\n\
         tproxies:\n\
         \x20 px: {{mark: 3000, port: 7893, dns-hijack: {{ip: 127.0.0.1, ip6: '::1', port: 5353, tcp: true}}}}\n\
         rules:\n\
         \x20 - {{match: '^{rel}/proxy', tproxy: px}}\n\
         \x20 - {{match: '^{rel}/reject', reject: true}}\n\
         \x20 - {{match: '^{rel}/direct', direct: true}}\n"
    )
}

fn ask(bed: &Testbed, cg: &TestCgroups, sub: &str, proto: &str, addr: &str, port: u16) -> String {
    bed.client(&cg.dir.join(sub), proto, addr, port, &format!("{sub}-{proto}-{port}"))
}

#[test]
fn reject_fails_at_once_and_stub_dns_is_hijacked() {
    if !root("reject_fails_at_once_and_stub_dns_is_hijacked") {
        return;
    }
    let bed = Testbed::new("tgt");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    // The hijack target (what mihomo's DNS listener is) ...
    let dns = ["127.0.0.1", "::1"].map(|addr| {
        let p = Proc::spawn(&format!("{} {} dns {addr} 5353", bed.local.enter(), helper()));
        p.wait_for("READY", 10);
        p
    });
    // ... and a stub resolver on port 53 of every local address (what
    // systemd-resolved's 127.0.0.53 is).
    let stub = Proc::spawn(&format!("{} {} serve STUB 53", bed.local.enter(), helper()));
    stub.wait_for("READY", 10);
    let cg = TestCgroups::new("tgt");
    for sub in ["proxy", "reject", "direct"] {
        cg.mkdir(sub);
    }
    let (mut daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));

    // reject: TCP gets a reset at once (a dropped SYN would end in TIMEOUT
    // after the client's 1.5 s); a UDP send fails at once, EPERM from the
    // local drop or ECONNREFUSED from the ICMP port unreachable.
    for addr in [REMOTE4, REMOTE6] {
        assert_eq!(ask(&bed, &cg, "reject", "tcp", addr, 9999), "ERROR Connection refused", "reject tcp {addr}");
        let got = ask(&bed, &cg, "reject", "udpc", addr, 9999);
        assert!(
            ["ERROR Connection refused", "ERROR Operation not permitted"].contains(&got.as_str()),
            "reject udp {addr}: {got}"
        );
    }
    assert_eq!(bed.packets_at_9999(), 0, "a rejected packet reached the remote host");
    // Other cgroups are not affected.
    assert!(ask(&bed, &cg, "direct", "tcp", REMOTE4, 8080).starts_with("REMOTE"));

    // DNS to the stub resolver (a bypassed address) is hijacked for a
    // hijacking cgroup, over UDP and TCP, IPv4 and IPv6 ...
    for proto in ["udp", "tcp"] {
        for addr in ["127.0.0.53", "::1"] {
            let got = ask(&bed, &cg, "proxy", proto, addr, 53);
            assert!(got.starts_with("DNS "), "proxy {proto} {addr}:53 answered {got:?}");
        }
        // ... and so is DNS to any other bypassed server, or a remote one.
        assert!(ask(&bed, &cg, "proxy", proto, "192.0.2.2", 53).starts_with("DNS "));
        assert!(ask(&bed, &cg, "proxy", proto, REMOTE4, 53).starts_with("DNS "));
        // A direct cgroup reaches the stub itself.
        let got = ask(&bed, &cg, "direct", proto, "127.0.0.53", 53);
        assert!(got.starts_with("STUB "), "direct {proto} 127.0.0.53:53 answered {got:?}");
    }
    // Other bypassed traffic of the proxied cgroup still goes direct.
    assert!(ask(&bed, &cg, "proxy", "tcp", "192.0.2.2", 8080).starts_with("REMOTE"));
    assert!(!stub.output().contains("proxy-"), "the stub saw hijackable DNS:\n{}", stub.output());
    drop(dns);
    let status = daemon.stop();
    assert!(status.success(), "{}", daemon.output());
    assert_clean(&bed.local);
}
