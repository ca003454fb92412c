//! Real proxy software from Debian's packages behind cgtproxy, in test
//! namespaces: v2ray (dokodemo-door with tproxy, freedom outbound),
//! shadowsocks-libev (ss-redir to an ss-server on the remote host) and
//! dnsmasq as the DNS server of the hijack. Each test skips with a message
//! when its package is missing (`.ci/run` installs them).

mod common;
use common::*;

/// Is `cmd` installed? Otherwise say which test skips and why.
fn have(test: &str, cmd: &str, package: &str) -> bool {
    if try_sh(&format!("command -v {cmd}")).0 {
        return true;
    }
    eprintln!("SKIPPED {test}: `{cmd}` is missing (apt-get install {package})");
    false
}

fn config(rel: &str) -> String {
    format!(
        "version: 1\n\
         bypass: [127.0.0.0/8, '::1']\n\
         tproxies:\n\
         \x20 v2: {{mark: 3000, port: 7893, dns-hijack: {{ip: 127.0.0.1, ip6: '::1', port: 5353, tcp: true}}}}\n\
         \x20 ss: {{mark: 3001, port: 7894}}\n\
         rules:\n\
         \x20 - {{match: '^{rel}/v2ray$', direct: true}}\n\
         \x20 - {{match: '^{rel}/v2ray-marked$', drop: true}}\n\
         \x20 - {{match: '^{rel}/app-v2', tproxy: v2}}\n\
         \x20 - {{match: '^{rel}/app-ss', tproxy: ss}}\n"
    )
}

/// Start `cmd` inside the test cgroup `sub` and the local namespace.
fn spawn_in(bed: &Testbed, cg: &TestCgroups, sub: &str, cmd: &str) -> Proc {
    Proc::spawn(&format!(
        "sh -c {}",
        shell_quote(&format!(
            "echo $$ > {}/cgroup.procs && exec {} {cmd}",
            cg.dir.join(sub).display(),
            bed.local.enter()
        ))
    ))
}

fn ask(bed: &Testbed, cg: &TestCgroups, sub: &str, proto: &str, addr: &str, port: u16) -> String {
    bed.client(&cg.dir.join(sub), proto, addr, port, &format!("{sub}-{proto}-{port}").replace('/', "_"))
}

fn dns(bed: &Testbed, cg: &TestCgroups, sub: &str, addr: &str, proto: &str) -> String {
    let cmd = format!(
        "echo $$ > {}/cgroup.procs && exec {} {} dnsq {addr} 53 name.test {proto}",
        cg.dir.join(sub).display(),
        bed.local.enter(),
        helper()
    );
    try_sh(&cmd).1.trim().to_owned()
}

/// Wait until something listens on `port` in the local namespace.
fn wait_listen(bed: &Testbed, port: u16) {
    let ok = wait_until(10, || bed.local.sh(&format!("ss -Hltn 'sport = :{port}'")).contains(&format!(":{port}")));
    assert!(ok, "nothing listens on {port}");
}

/// v2ray in the test cgroup `sub`: a dokodemo-door TPROXY inbound on port
/// 7893 and a freedom outbound with `outbound_sockopt` (say `"mark": 255`).
fn start_v2ray(bed: &Testbed, cg: &TestCgroups, tmp: &TempDir, sub: &str, outbound_sockopt: &str) -> Proc {
    // One dual-stack listener ("::") serves the tproxy port for IPv4 and IPv6.
    let v2 = tmp.0.join("v2ray.json");
    std::fs::write(
        &v2,
        format!(
            r#"{{
  "log": {{"loglevel": "info"}},
  "inbounds": [{{
    "port": 7893, "listen": "::", "protocol": "dokodemo-door",
    "settings": {{"network": "tcp,udp", "followRedirect": true}},
    "streamSettings": {{"sockopt": {{"tproxy": "tproxy"}}}}
  }}],
  "outbounds": [{{"protocol": "freedom", "streamSettings": {{"sockopt": {{{outbound_sockopt}}}}}}}]
}}"#
        ),
    )
    .unwrap();
    let v2ray = spawn_in(bed, cg, sub, &format!("v2ray -config {}", v2.display()));
    wait_listen(bed, 7893);
    v2ray
}

/// A routing mark unlike every tproxy mark keeps the proxy's own traffic
/// out of cgtproxy's rules: here v2ray runs in a cgroup whose rule is
/// `drop`, and its marked connections still leave.
#[test]
fn v2ray_with_a_routing_mark() {
    let test = "v2ray_with_a_routing_mark";
    if !root(test) || !have(test, "v2ray", "v2ray") {
        return;
    }
    let bed = Testbed::new("v2m");
    let cg = TestCgroups::new("v2m");
    for sub in ["v2ray-marked", "app-v2"] {
        cg.mkdir(sub);
    }
    let tmp = TempDir::new("v2m");
    let v2ray = start_v2ray(&bed, &cg, &tmp, "v2ray-marked", r#""mark": 255"#);
    let (mut daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));
    for proto in ["tcp", "udp"] {
        for addr in [REMOTE4, REMOTE6] {
            let got = ask(&bed, &cg, "app-v2", proto, addr, 8080);
            assert!(got.starts_with("REMOTE app-v2"), "{proto} {addr}: {got}\nv2ray:\n{}", v2ray.output());
        }
    }
    assert!(v2ray.output().contains(&format!("tcp:{REMOTE4}:8080")), "{}", v2ray.output());
    // Without the mark, a program in that cgroup is dropped: its rule holds.
    let unmarked = ask(&bed, &cg, "v2ray-marked", "tcp", REMOTE4, 8080);
    assert!(unmarked == "TIMEOUT" || unmarked.starts_with("ERROR"), "{unmarked}");
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&bed.local);
}

#[test]
fn v2ray_dokodemo_tproxy_and_dnsmasq_hijack() {
    let test = "v2ray_dokodemo_tproxy_and_dnsmasq_hijack";
    if !root(test) || !have(test, "v2ray", "v2ray") || !have(test, "dnsmasq", "dnsmasq-base") {
        return;
    }
    let bed = Testbed::new("v2r");
    let cg = TestCgroups::new("v2r");
    for sub in ["v2ray", "app-v2", "dnsmasq"] {
        cg.mkdir(sub);
    }
    let tmp = TempDir::new("v2r");
    let v2ray = start_v2ray(&bed, &cg, &tmp, "v2ray", "");
    let dnsmasq = spawn_in(
        &bed,
        &cg,
        "dnsmasq",
        "dnsmasq -k -C /dev/null -u root --pid-file= --port 5353 --listen-address=127.0.0.1,::1 --bind-interfaces \
         --no-resolv --no-hosts --address=/name.test/203.0.113.7",
    );
    wait_until(10, || bed.local.sh("ss -Hlun 'sport = :5353'").contains("5353"));
    let (mut daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));

    for proto in ["tcp", "udp"] {
        for addr in [REMOTE4, REMOTE6] {
            let got = ask(&bed, &cg, "app-v2", proto, addr, 8080);
            assert!(got.starts_with("REMOTE app-v2"), "{proto} {addr}: {got}\nv2ray:\n{}", v2ray.output());
        }
    }
    // They went through v2ray, which saw the original destinations.
    let log = v2ray.output();
    for dest in [format!("tcp:{REMOTE4}:8080"), format!("udp:{REMOTE4}:8080"), format!("tcp:[{REMOTE6}]:8080")] {
        assert!(log.contains(&dest), "v2ray did not handle {dest}:\n{log}");
    }
    // DNS from the proxied app, to the stub resolver, a bypassed address or
    // a remote server, over UDP and TCP: answered by dnsmasq.
    for addr in ["127.0.0.53", "::1", REMOTE4, REMOTE6] {
        for proto in ["udp", "tcp"] {
            assert_eq!(dns(&bed, &cg, "app-v2", addr, proto), "ANSWER 203.0.113.7", "{proto} {addr}");
        }
    }
    drop(dnsmasq);
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&bed.local);
}

#[test]
fn ss_redir_in_a_proxied_cgroup_is_kept_direct() {
    let test = "ss_redir_in_a_proxied_cgroup_is_kept_direct";
    if !root(test) || !have(test, "ss-redir", "shadowsocks-libev") {
        return;
    }
    let bed = Testbed::new("ssr");
    let cg = TestCgroups::new("ssr");
    // ss-redir runs below a cgroup whose rule proxies it: the proxy-loop
    // guard finds its listeners and keeps its cgroup direct.
    for sub in ["app-ss/ss-redir", "app-ss/client"] {
        cg.mkdir(sub);
    }
    let secret = "-k cgtproxy-test -m chacha20-ietf-poly1305";
    let server = Proc::spawn(&format!("{} ss-server -s 0.0.0.0 -s :: -p 8388 {secret} -u -v", bed.remote.enter()));
    assert!(
        wait_until(10, || bed.remote.sh("ss -Hltn 'sport = :8388'").contains("8388")),
        "ss-server:\n{}",
        server.output()
    );
    // -T: TPROXY for TCP, on "::" for IPv4 and IPv6. UDP (-U, always
    // TPROXY) needs its own instance per family: a dual-stack UDP socket
    // does not get IPv4 packets' original destination.
    let redir =
        spawn_in(&bed, &cg, "app-ss/ss-redir", &format!("ss-redir -s 192.0.2.2 -p 8388 -b :: -l 7894 {secret} -T -v"));
    wait_listen(&bed, 7894);
    let redir_udp4 = spawn_in(
        &bed,
        &cg,
        "app-ss/ss-redir",
        &format!("ss-redir -s 192.0.2.2 -p 8388 -b 0.0.0.0 -l 7894 {secret} -U -v --reuse-port"),
    );
    let redir_udp6 = spawn_in(
        &bed,
        &cg,
        "app-ss/ss-redir",
        &format!("ss-redir -s 192.0.2.2 -p 8388 -b :: -l 7894 {secret} -U -v --reuse-port"),
    );
    redir_udp4.wait_for("listening at", 10);
    redir_udp6.wait_for("listening at", 10);
    let (mut daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));
    let line = daemon.wait_for("kept direct", 10);
    assert!(line.contains(&format!("listens in cgroup {}/app-ss/ss-redir", cg.rel)), "{line}");

    for (proto, addr) in [("tcp", REMOTE4), ("tcp", REMOTE6), ("udp", REMOTE4), ("udp", REMOTE6)] {
        let got = ask(&bed, &cg, "app-ss/client", proto, addr, 8080);
        assert!(
            got.starts_with("REMOTE app-ss_client"),
            "{proto} {addr}: {got}\nss-redir:\n{}\n{}\n{}\nss-server:\n{}",
            redir.output(),
            redir_udp4.output(),
            redir_udp6.output(),
            server.output()
        );
    }
    // ss-server (on the remote host) made the connections, not the client.
    let log = server.output();
    assert!(log.contains(&format!("{REMOTE4}:8080")) || log.contains("connect to"), "ss-server:\n{log}");
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_clean(&bed.local);
}
