//! Gateway mode end to end, in network namespaces: forwarded traffic of LAN
//! clients on a bridge, a container behind a Docker-named bridge (`br-…`),
//! a routed VPN-like peer, with br_netfilter's bridge-nf-call-iptables at 1.
//!
//! ```text
//!  lan-a 192.0.2.10 ─┐                       ┌ remote: 198.51.100.2
//!  lan-b 192.0.2.11 ─┼ lan0 ┐                │  serves 203.0.113.2,
//!  lan-c 192.0.2.12 ─┘      ├─ gw ── veth ───┘  203.0.113.99 (bypass),
//!  ctr  192.0.2.70 ── br-N ─┤  (cgtproxy,        2001:db8:200::2
//!  peer 192.0.2.130 ─ veth ─┘   TPROXY :7893, DNS :1053, LOCAL :8080)
//! ```

mod common;
use common::*;

const TARGET4: &str = "203.0.113.2";
const TARGET6: &str = "2001:db8:200::2";
const BYPASSED: &str = "203.0.113.99";

struct Lab {
    gw: NetNs,
    remote: NetNs,
    clients: Vec<(String, NetNs)>,
    procs: Vec<Proc>,
    /// The Docker-like bridge's name.
    br: String,
    peer_if: String,
}

/// `ip link add` a veth with one end in `a` named `an` and the other in `b` named `bn`.
fn veth(a: &NetNs, an: &str, b: &NetNs, bn: &str) {
    sh(&format!("ip link add {an} netns {} type veth peer name {bn} netns {}", a.name, b.name));
}

impl Lab {
    fn new(tag: &str) -> Self {
        let gw = NetNs::new(&format!("{tag}g"));
        let remote = NetNs::new(&format!("{tag}r"));
        let pid = std::process::id() % 100_000;
        let br = format!("br-{pid}a");
        let peer_if = format!("vpn{pid}");
        // Forwarding on; br_netfilter's IP hooks on, as on every Docker host.
        gw.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
               net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1");
        veth(&gw, "up0", &remote, "down0");
        gw.sh("ip link set up0 up && ip addr add 198.51.100.1/24 dev up0 && ip -6 addr add 2001:db8:100::1/64 dev up0 nodad \
               && ip route add default via 198.51.100.2 && ip -6 route add default via 2001:db8:100::2");
        remote.sh(&format!(
            "ip link set down0 up && ip addr add 198.51.100.2/24 dev down0 && ip -6 addr add 2001:db8:100::2/64 dev down0 nodad \
             && ip addr add {TARGET4}/32 dev lo && ip addr add {BYPASSED}/32 dev lo && ip -6 addr add {TARGET6}/128 dev lo nodad \
             && ip route add 192.0.2.0/24 via 198.51.100.1 && ip -6 route add 2001:db8::/40 via 2001:db8:100::1 \
             && nft 'add table inet count; add chain inet count in {{ type filter hook prerouting priority 0; }}; \
                     add rule inet count in th dport 9999 counter'"
        ));
        let mut lab = Lab { gw, remote, clients: Vec::new(), procs: Vec::new(), br, peer_if };
        lab.bridge("lan0", "192.0.2.1/26", "2001:db8:1::1/64");
        for (name, n) in [("lan-a", 10), ("lan-b", 11), ("lan-c", 12), ("lan-d", 13)] {
            lab.client(
                name,
                "lan0",
                &format!("192.0.2.{n}"),
                &format!("2001:db8:1::{n}"),
                "192.0.2.1",
                "2001:db8:1::1",
            );
        }
        let br = lab.br.clone();
        lab.bridge(&br, "192.0.2.65/26", "2001:db8:2::1/64");
        lab.client("ctr", &br, "192.0.2.70", "2001:db8:2::70", "192.0.2.65", "2001:db8:2::1");
        // A routed peer on a plain point-to-point link, as WireGuard's are.
        let peer = NetNs::new(&format!("{tag}p"));
        let pif = lab.peer_if.clone();
        veth(&lab.gw, &pif, &peer, "eth0");
        lab.gw.sh(&format!(
            "ip link set {pif} up && ip addr add 192.0.2.129/26 dev {pif} && ip -6 addr add 2001:db8:3::1/64 dev {pif} nodad"
        ));
        peer.sh("ip link set eth0 up && ip addr add 192.0.2.130/26 dev eth0 && ip -6 addr add 2001:db8:3::130/64 dev eth0 nodad \
                 && ip route add default via 192.0.2.129 && ip -6 route add default via 2001:db8:3::1");
        lab.clients.push(("peer".into(), peer));
        let serve = Proc::spawn(&format!("{} {} serve REMOTE 8080 9999 53", lab.remote.enter(), helper()));
        serve.wait_for("READY", 10);
        let tproxy = Proc::spawn(&format!("{} {} tproxy 7893 7894", lab.gw.enter(), helper()));
        tproxy.wait_for("READY", 10);
        let local = Proc::spawn(&format!("{} {} serve LOCAL 8080", lab.gw.enter(), helper()));
        local.wait_for("READY", 10);
        lab.procs.extend([serve, tproxy, local]);
        for addr in ["0.0.0.0", "::"] {
            let dns = Proc::spawn(&format!("{} {} dns {addr} 1053", lab.gw.enter(), helper()));
            dns.wait_for("READY", 10);
            lab.procs.push(dns);
        }
        lab
    }

    /// A bridge in the gateway with its addresses.
    fn bridge(&self, name: &str, v4: &str, v6: &str) {
        self.gw.sh(&format!(
            "ip link add {name} type bridge && ip link set {name} up && ip addr add {v4} dev {name} \
             && ip -6 addr add {v6} dev {name} nodad"
        ));
    }

    /// A client namespace on `bridge`, default routes via the gateway.
    fn client(&mut self, name: &str, bridge: &str, v4: &str, v6: &str, gw4: &str, gw6: &str) -> &NetNs {
        let ns = NetNs::new(&format!("c{}", self.clients.len()));
        let port = format!("p{}{}", self.clients.len(), &bridge[..bridge.len().min(8)]);
        veth(&self.gw, &port, &ns, "eth0");
        self.gw.sh(&format!("ip link set {port} master {bridge} && ip link set {port} up"));
        ns.sh(&format!(
            "ip link set eth0 up && ip addr add {v4}/26 dev eth0 && ip -6 addr add {v6}/64 dev eth0 nodad \
             && ip route add default via {gw4} && ip -6 route add default via {gw6}"
        ));
        self.clients.push((name.to_owned(), ns));
        &self.clients.last().unwrap().1
    }

    fn ns(&self, client: &str) -> &NetNs {
        &self.clients.iter().find(|(n, _)| n == client).unwrap().1
    }

    fn ask(&self, client: &str, proto: &str, addr: &str, port: u16) -> String {
        let token = format!("{client}-{proto}-{port}");
        // The VM emulates its CPU: everything there is several times slower.
        let timeout = if want_broute() { 5.0 } else { 1.5 };
        let (_, out) = self.ns(client).try_sh(&format!("{} client {proto} {addr} {port} {token} {timeout}", helper()));
        out.trim().to_owned()
    }

    fn expect(&self, client: &str, proto: &str, addr: &str, port: u16, want: &str) {
        let got = self.ask(client, proto, addr, port);
        assert!(
            want.split('|').any(|w| got.starts_with(w)),
            "{client} {proto} {addr}:{port}: want {want:?}, got {got:?}\ntproxy/services:\n{}",
            self.procs.iter().map(Proc::output).collect::<Vec<_>>().join("\n")
        );
    }

    fn packets_at_9999(&self) -> u64 {
        counted_packets(&self.remote)
    }

    fn config(&self, extra_rules: &str) -> String {
        format!(
            "version: 1\n\
             bypass: ['{BYPASSED}']\n\
             counters: true\n\
             tproxies:\n\
             \x20 px: {{mark: 3000, port: 7893, dns-hijack: {{port: 1053, ip6: '::1', tcp: true}}}}\n\
             \x20 lite: {{mark: 3001, port: 7894, no-udp: true, no-ipv6: true}}\n\
             {extra_rules}\
             gateway:\n\
             \x20 - {{source: [192.0.2.12/32], drop: true}}\n\
             \x20 - {{interface: 'br-*', tproxy: px}}\n\
             \x20 - {{interface: lan0, source: [192.0.2.10/32, '2001:db8:1::10'], tproxy: px}}\n\
             \x20 - {{interface: {}, tproxy: px}}\n\
             \x20 - {{source: [192.0.2.13/32, '2001:db8:1::13'], tproxy: lite}}\n",
            self.peer_if
        )
    }

    /// What "as it was" means after stop: ruleset, rules, routes, sysctls.
    fn snapshot(&self) -> String {
        self.gw.sh(
            "nft list ruleset; ip rule; ip -6 rule; ip route show table all | grep -v fe80; ip -6 route show table all | grep -v fe80; \
             sysctl net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward \
             net.ipv6.conf.all.forwarding",
        )
    }
}

/// Set in the VM of `gateway_on_a_kernel_that_can_broute`.
fn want_broute() -> bool {
    std::env::var_os("CGTPROXY_TEST_WANT_BROUTE").is_some()
}

const PROXIED4: &str = "TPROXY 7893 203.0.113.2:8080";
const PROXIED6: &str = "TPROXY 7893 [2001:db8:200::2]:8080";

#[test]
fn gateway_forwarded_traffic() {
    if !root("gateway_forwarded_traffic") {
        return;
    }
    let lab = Lab::new("gw");
    assert_eq!(lab.gw.sh("sysctl -n net.bridge.bridge-nf-call-iptables").trim(), "1");
    let before = lab.snapshot();
    // The gateway's own cgroups keep their rules.
    let cg = TestCgroups::new("gw");
    cg.mkdir("proxy");
    cg.mkdir("direct");
    let rules = format!(
        "rules:\n  - {{match: '^{0}/proxy', tproxy: px}}\n  - {{match: '^{0}/direct', direct: true}}\n",
        cg.rel
    );
    // In the VM (a kernel that can broute) the host's nft is 1.0.6, which
    // crashes listing `meta broute`, and the daemon would rightly not
    // broute: there it runs as on a host without the nft command.
    let path = if want_broute() { "PATH=/usr/bin:/bin" } else { "" };
    let (mut daemon, cfg) = start_daemon_env(&lab.gw, &lab.config(&rules), path);

    for proto in ["tcp", "udp"] {
        for client in ["lan-a", "ctr", "peer"] {
            // Proxied, with the original destination, IPv4 and IPv6.
            lab.expect(client, proto, TARGET4, 8080, PROXIED4);
            lab.expect(client, proto, TARGET6, 8080, PROXIED6);
            // Forwarded DNS reaches the DNS server, whatever resolver was asked.
            lab.expect(client, proto, TARGET4, 53, "DNS");
            lab.expect(client, proto, TARGET6, 53, "DNS");
            // Bypass: direct.
            lab.expect(client, proto, BYPASSED, 8080, "REMOTE");
        }
        // no-udp and no-ipv6 mean direct, as for cgroups; a source-only entry.
        let lite = if proto == "tcp" { "TPROXY 7894 203.0.113.2:8080" } else { "REMOTE" };
        lab.expect("lan-d", proto, TARGET4, 8080, lite);
        lab.expect("lan-d", proto, TARGET6, 8080, "REMOTE");
        // The gateway's own services are reached as such, not proxied.
        lab.expect("lan-a", proto, "192.0.2.1", 8080, "LOCAL");
        lab.expect("ctr", proto, "192.0.2.65", 8080, "LOCAL");
        lab.expect("peer", proto, "2001:db8:3::1", 8080, "LOCAL");
        // Unmatched clients are forwarded directly.
        lab.expect("lan-b", proto, TARGET4, 8080, "REMOTE");
        lab.expect("lan-b", proto, TARGET6, 8080, "REMOTE");
        lab.expect("lan-b", proto, TARGET4, 53, "REMOTE");
        // LAN to LAN on one bridge is not the gateway's business.
        lab.expect("lan-b", proto, "192.0.2.10", 7, "TIMEOUT|ERROR");
        // Drop entries never leave.
        lab.expect("lan-c", proto, TARGET4, 9999, "TIMEOUT|ERROR");
    }
    assert_eq!(lab.packets_at_9999(), 0, "a packet of a drop entry reached the remote host");
    // Other protocols pass for a proxied client, and a drop entry drops them too.
    for (client, want) in [("lan-a", "PONG"), ("ctr", "PONG"), ("lan-b", "PONG"), ("lan-c", "TIMEOUT")] {
        // The emulated VM may take seconds for a first echo (ARP across the bridge).
        let timeout = if want_broute() { 5.0 } else { 1.5 };
        let (_, got) = lab.ns(client).try_sh(&format!("{} ping {TARGET4} {timeout}", helper()));
        assert_eq!(got.trim(), want, "ICMP from {client}");
    }

    // The gateway's own cgroup rules are unaffected.
    for (sub, want) in [("proxy", PROXIED4), ("direct", "REMOTE")] {
        let cmd = format!(
            "echo $$ > {}/cgroup.procs && exec {} {} client tcp {TARGET4} 8080 own-{sub} 1.5",
            cg.dir.join(sub).display(),
            lab.gw.enter(),
            helper()
        );
        let (_, got) = try_sh(&cmd);
        assert!(got.starts_with(want), "own cgroup {sub}: want {want:?}, got {got:?}");
    }

    // A Docker network created while the daemon runs is covered with no reload.
    let mut lab = lab;
    let late = format!("{}b", &lab.br[..lab.br.len() - 1]);
    lab.bridge(&late, "192.0.2.193/26", "2001:db8:4::1/64");
    lab.client("late", &late, "192.0.2.200", "2001:db8:4::200", "192.0.2.193", "2001:db8:4::1");
    for proto in ["tcp", "udp"] {
        lab.expect("late", proto, TARGET4, 8080, PROXIED4);
        lab.expect("late", proto, TARGET6, 8080, PROXIED6);
    }
    // Gone again (with its port), so the namespace can be compared below.
    let port = format!("p{}{}", lab.clients.len() - 1, &late[..late.len().min(8)]);
    lab.gw.sh(&format!("ip link del {late} && ip link del {port}"));

    // status and explain see the gateway.
    let status = sh(&format!(
        "CGTPROXY_STATE={} {} {} status -c {}",
        cfg.with_extension("state.json").display(),
        lab.gw.enter(),
        bin(),
        cfg.display()
    ));
    assert!(status.contains("gateway (forwarded traffic, first match wins): in place"), "{status}");
    // Which way bridged clients escaped br_netfilter: brouted frames are
    // counted by the bridge table's entry rules (nft 1.0.6 lists that chain;
    // it crashes on the tproxy's chain, which holds `meta broute`).
    let brouted = status.contains("bridges: broute");
    if want_broute() {
        assert!(brouted, "this kernel can broute but the daemon did not:\n{status}");
    }
    if brouted {
        let chain = lab.gw.sh("nft list chain bridge cgtproxy prerouting");
        let counted = |pattern: &str| {
            chain
                .lines()
                .find(|l| l.contains(pattern))
                .and_then(|l| l.split("packets ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(counted("\"br-*\"") > 0 && counted("\"lan0\"") > 0, "nothing brouted:\n{chain}");
        // The bridge table is healed like the inet one.
        lab.gw.sh("nft delete table bridge cgtproxy");
        assert!(
            wait_until(5, || lab.gw.try_sh("nft list chain bridge cgtproxy prerouting").0),
            "table bridge cgtproxy not restored:\n{}",
            daemon.output()
        );
        lab.expect("ctr", "tcp", TARGET4, 8080, PROXIED4);
    } else {
        assert!(status.contains("bridges: this kernel cannot broute"), "{status}");
    }
    // counters: true: the container's entry counted its flows.
    let line = status.lines().find(|l| l.contains("gateway[1]")).unwrap_or_default();
    let packets: u64 = line.split("  ").last().and_then(|p| p.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(packets > 0, "no packets counted for gateway[1]: {status}");
    let explain =
        sh(&format!("{} {} explain -c {} --from 192.0.2.70 --iif {}", lab.gw.enter(), bin(), cfg.display(), lab.br));
    assert!(explain.contains("gateway[1]") && explain.contains("tproxy px"), "{explain}");

    let status = daemon.stop();
    assert!(status.success(), "daemon exit {status}:\n{}", daemon.output());
    assert_eq!(lab.snapshot(), before, "the gateway namespace is not as it was");
    assert_clean(&lab.gw);
}

/// Outside its table the daemon changes only the br_netfilter sysctls, and
/// only on kernels that cannot broute: turned off while a gateway tproxy
/// entry exists, back on after a reload without one, off again when another
/// program (Docker) sets them, restored on stop.
#[test]
fn gateway_sysctls_follow_config_and_are_restored() {
    if !root("gateway_sysctls_follow_config_and_are_restored") {
        return;
    }
    let ns = NetNs::new("gws");
    ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1");
    let brnf =
        || ns.sh("sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables").replace('\n', " ");
    enter_netns(&ns);
    use cgtproxy::daemon::gateway::{Brouting, probe};
    let brouting = probe(&mut cgtproxy::nft::Nft::open().unwrap());
    let can_broute = brouting == Brouting::Yes;
    let with = "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\ngateway: [{interface: 'br-*', tproxy: px}]\n";
    let (mut daemon, cfg) = start_daemon(&ns, with);
    let want_running = if can_broute { "1 1 " } else { "0 0 " };
    assert_eq!(brnf(), want_running, "{}", daemon.output());
    if !can_broute {
        let why = if want_broute() { "crashes listing `meta broute`" } else { "CANNOT broute" };
        assert!(daemon.output().contains(why), "{brouting:?}\n{}", daemon.output());
        // Docker creating a network turns it back on.
        ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=1");
        assert!(wait_until(3, || brnf() == "0 0 "), "not turned off again:\n{}", daemon.output());
    }
    // Reload without the gateway: everything back as it was.
    std::fs::write(&*cfg, "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("reloaded", 10);
    assert_eq!(brnf(), "1 1 ");
    assert!(!ns.sh("nft list ruleset").contains("gateway"));
    // And with it again, then stop.
    std::fs::write(&*cfg, with).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(wait_until(10, || daemon.output().matches("reloaded").count() == 2), "{}", daemon.output());
    assert_eq!(brnf(), want_running);
    let status = daemon.stop();
    assert!(status.success(), "{}", daemon.output());
    assert_eq!(brnf(), "1 1 ");
    assert_clean(&ns);
    if want_broute() {
        // Reverse-path filtering would drop brouted IPv4 (a bridge port has
        // no address): the daemon turns the sysctls off instead, and says why.
        ns.sh("sysctl -qw net.ipv4.conf.all.rp_filter=2");
        let (mut d, _cfg) = start_daemon_env(&ns, with, "PATH=/usr/bin:/bin");
        assert_eq!(brnf(), "0 0 ", "{}", d.output());
        assert!(d.output().contains("reverse-path filtering is on"), "{}", d.output());
        assert!(d.stop().success(), "{}", d.output());
        assert_eq!(brnf(), "1 1 ");
        ns.sh("sysctl -qw net.ipv4.conf.all.rp_filter=0");
    }
    if can_broute {
        return;
    }

    // A killed daemon leaves them at 0; what they were is kept beside the
    // state file, for the next instance and for `cgtproxy cleanup`.
    let state = cfg.with_extension("crash.json");
    let spawn = || {
        let p = Proc::spawn(&format!(
            "env CGTPROXY_STATE={} {} {} -c {}",
            state.display(),
            ns.enter(),
            bin(),
            cfg.display()
        ));
        p.wait_for("ready", ready_secs());
        p
    };
    let kill = |mut p: Proc| {
        p.signal(libc::SIGKILL);
        let _ = p.stop();
        assert_eq!(brnf(), "0 0 ", "{}", p.output());
    };
    kill(spawn());
    // The next instance puts back what the first one found.
    let mut again = spawn();
    assert!(again.stop().success(), "{}", again.output());
    assert_eq!(brnf(), "1 1 ", "{}", again.output());
    // Killed again, and the next instance has no gateway entries: it still
    // puts back what the killed one left at 0.
    kill(spawn());
    std::fs::write(&*cfg, "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\n").unwrap();
    let mut plain = spawn();
    assert_eq!(brnf(), "1 1 ", "{}", plain.output());
    assert!(plain.stop().success(), "{}", plain.output());
    std::fs::write(&*cfg, with).unwrap();
    kill(spawn());
    let out =
        sh(&format!("CGTPROXY_STATE={} {} {} cleanup -c {} 2>&1", state.display(), ns.enter(), bin(), cfg.display()));
    assert_eq!(brnf(), "1 1 ", "cleanup: {out}");
    assert!(!state.with_extension("sysctls").exists());
    assert_clean(&ns);
}

/// Both tests above again on a kernel that can broute: this machine's kernel
/// has no nft_meta_bridge, so Debian's 6.12 kernel (bookworm-backports) boots
/// in a VM (tests/vm: software emulation, the host's files read-only over
/// 9p) and runs this test binary, with br_netfilter loaded as Docker does.
/// There, bridged clients are proxied with bridge-nf-call-iptables left at 1.
#[test]
fn gateway_on_a_kernel_that_can_broute() {
    if !root("gateway_on_a_kernel_that_can_broute") || want_broute() {
        return;
    }
    for tool in ["qemu-system-x86_64", "cpio", "busybox", "depmod"] {
        if !try_sh(&format!("command -v {tool}")).0 {
            eprintln!(
                "SKIPPED gateway_on_a_kernel_that_can_broute: {tool} missing \
                 (apt-get install qemu-system-x86 cpio busybox-static kmod; .ci/run does)"
            );
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        // The daemon's debug binary (70 MB) is read over 9p first, so its
        // first start is not slowed by demand paging under emulation.
        "modprobe br_netfilter && cat {} > /dev/null && CGTPROXY_TEST_WANT_BROUTE=1 exec {} --test-threads=1 \
         --nocapture --skip gateway_on_a_kernel_that_can_broute",
        bin(),
        exe.display()
    );
    let (ok, out) = try_sh(&format!("tests/vm/run sh -c {}", shell_quote(&cmd)));
    assert!(ok && out.contains("test result: ok. 2 passed"), "in the VM:\n{out}");
}
