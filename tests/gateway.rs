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
             gateway-bridge-netfilter-off: true\n\
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

/// The VM of `gateway_on_a_kernel_that_can_broute` emulates its CPU: on a
/// machine whose two cores the other tests here keep busy, its 5 s
/// exchanges time out. It runs alone: every other test holds this shared.
static VM: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn beside_vm() -> std::sync::RwLockReadGuard<'static, ()> {
    VM.read().unwrap_or_else(|e| e.into_inner())
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
    let _vm = beside_vm();
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
        // The host resolves its clients again (ARP replies are unicast to
        // its MAC): they are bridged, not brouted to the port, which has no
        // address. Brouted, the entry failed and replies never left.
        lab.gw.sh("ip neigh flush all");
        lab.expect("ctr", "tcp", TARGET4, 8080, PROXIED4);
        lab.expect("ctr", "udp", TARGET4, 8080, PROXIED4);
        lab.expect("lan-a", "tcp", TARGET4, 8080, PROXIED4);
        // The bridge table is healed like the inet one.
        lab.gw.sh("nft delete table bridge cgtproxy");
        assert!(
            wait_until(5, || lab.gw.try_sh("nft list chain bridge cgtproxy prerouting").0),
            "table bridge cgtproxy not restored:\n{}",
            daemon.output()
        );
        assert!(
            wait_until(5, || daemon.output().contains("restored table inet cgtproxy and table bridge cgtproxy")),
            "the log does not name the bridge table:\n{}",
            daemon.output()
        );
        lab.gw.sh("ip neigh flush all");
        let got = lab.ask("ctr", "tcp", TARGET4, 8080);
        assert!(
            got.starts_with(PROXIED4),
            "after the bridge table was restored: {got}\n{}\n{}\n{}\n{}\n{}",
            daemon.output(),
            lab.gw.try_sh("nft list set bridge cgtproxy local-nets; nft list set inet cgtproxy local-nets").1,
            lab.gw.try_sh("nft list chain bridge cgtproxy prerouting").1,
            lab.gw.try_sh("nft list table inet cgtproxy; ip rule; ip -6 rule; ip route show table all type local; cat /proc/net/nf_conntrack").1,
            lab.procs.iter().map(Proc::output).collect::<Vec<_>>().join("\n")
        );
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
    let _vm = beside_vm();
    let ns = NetNs::new("gws");
    ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1");
    let brnf =
        || ns.sh("sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables").replace('\n', " ");
    enter_netns(&ns);
    use cgtproxy::daemon::gateway::{Brouting, probe};
    let brouting = probe(&mut cgtproxy::nft::Nft::open().unwrap());
    let can_broute = brouting == Brouting::Yes;
    let with = "version: 1\ngateway-bridge-netfilter-off: true\ntproxies: {px: {mark: 3000, port: 7893}}\ngateway: [{interface: 'br-*', tproxy: px}]\n";
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
    let _alone = VM.write().unwrap_or_else(|e| e.into_inner());
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
         --nocapture gateway_forwarded_traffic gateway_sysctls_follow_config_and_are_restored",
        bin(),
        exe.display()
    );
    let (ok, out) = try_sh(&format!("tests/vm/run sh -c {}", shell_quote(&cmd)));
    assert!(ok && out.contains("test result: ok. 2 passed"), "in the VM:\n{out}");
}

/// Entries hold for every packet, not only for a flow's first (found by a
/// red-team pass): bare TCP segments conntrack calls invalid, answers of a
/// drop client to connections the outside starts, and a flow a DNAT rule
/// of the host turns towards the outside after the entry looked at it.
/// Each gets out from an unmatched client and from no matched one.
#[test]
fn gateway_entries_hold_for_packets_without_a_new_flow() {
    if !root("gateway_entries_hold_for_packets_without_a_new_flow") {
        return;
    }
    let _vm = beside_vm();
    let lab = Lab::new("gi");
    let (daemon, _cfg) = start_daemon(&lab.gw, &lab.config(""));
    let py = format!("python3 {}/tests/boundary.py", env!("CARGO_MANIFEST_DIR"));
    // A port forward on the gateway's own address, towards the outside.
    lab.gw.sh("nft 'add table ip pfw; add chain ip pfw pre { type nat hook prerouting priority dstnat; }; \
               add rule ip pfw pre ip daddr 198.51.100.1 udp dport 5353 dnat to 203.0.113.2:9999'");
    // What each probe got to the remote, one by one.
    let sent = |client: &str, v6: bool| {
        let ns = lab.ns(client);
        let mut report = Vec::new();
        let addr = if v6 { TARGET6 } else { TARGET4 };
        let mut probes: Vec<String> = ["fin", "rst"].iter().map(|f| format!("tcpflag {f} {addr} 9999")).collect();
        if !v6 {
            probes.push("probe udp 198.51.100.1 5353".into());
        }
        for p in probes {
            let before = lab.packets_at_9999();
            let out = ns.try_sh(&format!("{py} {p}")).1;
            std::thread::sleep(std::time::Duration::from_millis(100));
            report.push((p, out.trim().to_owned(), lab.packets_at_9999() - before));
        }
        report
    };
    let arrived = |r: &[(String, String, u64)]| r.iter().filter(|(_, _, n)| *n > 0).count();
    let r = sent("lan-b", false);
    assert_eq!(arrived(&r), r.len(), "from an unmatched client the probes get out: {r:?}");
    // lan-c's drop entry is IPv4 only; lan-a's tproxy entry both families.
    for (client, v6) in [("lan-c", false), ("lan-a", false), ("lan-a", true)] {
        let r = sent(client, v6);
        assert_eq!(arrived(&r), 0, "{client}: a packet left past its entry: {r:?}\n{}", daemon.output());
    }
    // The drop client serves nobody outside; the proxied one still answers.
    let mut servers = Vec::new();
    for client in ["lan-c", "lan-a"] {
        let p = Proc::spawn(&format!("{} {py} listen tcp 0.0.0.0 2222", lab.ns(client).enter()));
        p.wait_for("READY", 10);
        servers.push(p);
    }
    let probe = |addr: &str| lab.remote.try_sh(&format!("{py} probe tcp {addr} 2222")).1;
    assert!(probe("192.0.2.10").starts_with("REPLY HI"), "a proxied client answers connections from outside");
    let got = probe("192.0.2.12");
    assert!(got.starts_with("TIMEOUT"), "a drop client must not answer: {got}");
    let guard = lab.gw.sh("nft list chain inet cgtproxy gateway-forward-drop");
    assert!(!guard.contains("packets 0 "), "the forward guard counted nothing:\n{guard}");
}

/// One daemon per network namespace: a second one is refused at once (and
/// the first keeps its table untouched); a SIGKILL releases the lock; a
/// lock name squatted by an unprivileged user (abstract unix names have no
/// permissions) does not keep the daemon from starting.
#[test]
fn one_daemon_per_network_namespace() {
    if !root("one_daemon_per_network_namespace") {
        return;
    }
    let _vm = beside_vm();
    let ns = NetNs::new("lock");
    let config = "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\n";
    let (mut first, _cfg) = start_daemon(&ns, config);
    let table = ns.sh("nft -a list table inet cgtproxy");
    let started = std::time::Instant::now();
    let (second, _cfg2) = spawn_daemon(&ns, config, &Launch::ours());
    let mut second = second;
    let status = loop {
        if let Some(s) = second.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed().as_secs() < 10, "second daemon not refused:\n{}", second.output());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = second.output();
    assert!(!status.success(), "{out}");
    let pid = first.child.id();
    assert!(out.contains(&format!("another cgtproxy (pid {pid}) already runs in this network namespace")), "{out}");
    // Nothing was rewritten: same handles, and the first daemon saw no outside change.
    assert_eq!(ns.sh("nft -a list table inet cgtproxy"), table);
    assert!(!first.output().contains("outside"), "{}", first.output());
    // Another namespace is another lock.
    let other = NetNs::new("lock2");
    let (mut elsewhere, _c) = start_daemon(&other, config);
    assert!(elsewhere.stop().success(), "{}", elsewhere.output());
    // A SIGKILL releases the lock: the next start works at once.
    first.signal(libc::SIGKILL);
    let _ = first.stop();
    let (mut next, _c) = start_daemon(&ns, config);
    assert!(next.stop().success(), "{}", next.output());

    // A user binds the lock name first, listening or not.
    let ino = ns.sh("stat -L -c %i /proc/self/ns/net").trim().to_owned();
    for listen in ["s.listen(1)", "pass"] {
        let squat = Proc::spawn(&format!(
            "{} setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c {}",
            ns.enter(),
            shell_quote(&format!(
                "import socket,time\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n\
                 s.bind('\\0cgtproxy-{ino}')\n{listen}\nprint('READY',flush=True)\ntime.sleep(60)"
            ))
        ));
        squat.wait_for("READY", 10);
        let (mut d, _c) = start_daemon(&ns, config);
        assert!(d.output().contains("starting without it"), "{}", d.output());
        assert!(d.stop().success(), "{}", d.output());
    }
    assert_clean(&ns);
}

/// No silent global switch: without `gateway-bridge-netfilter-off` the
/// daemon never turns br_netfilter's IP hooks off (they keep Docker's
/// icc=false and every bridge-level filter working); the log, `status` and
/// `check permission` say loudly that TPROXY of bridged clients times out,
/// and name the bridges. With it, they name every bridge whose filtering is
/// off while the daemon runs.
#[test]
fn gateway_bridge_netfilter_is_never_switched_off_silently() {
    if !root("gateway_bridge_netfilter_is_never_switched_off_silently") || want_broute() {
        return;
    }
    let _vm = beside_vm();
    let ns = NetNs::new("gwq");
    ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 \
           && ip link add br-q1 type bridge && ip link add lanq type bridge && ip link add vq0 type veth peer name vq1");
    let brnf =
        || ns.sh("sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables").replace('\n', " ");
    enter_netns(&ns);
    use cgtproxy::daemon::gateway::{Brouting, probe};
    if probe(&mut cgtproxy::nft::Nft::open().unwrap()) == Brouting::Yes {
        eprintln!("SKIPPED: this kernel broutes; the sysctls are never touched here");
        return;
    }
    let plain = "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\ngateway: [{interface: 'br-*', tproxy: px}]\n";
    let (mut daemon, cfg) = start_daemon(&ns, plain);
    assert_eq!(brnf(), "1 1 ", "turned off without the opt-in:\n{}", daemon.output());
    let log = daemon.output();
    assert!(
        log.contains("TIMES OUT") && log.contains("(br-q1)") && log.contains("gateway-bridge-netfilter-off"),
        "{log}"
    );
    let status = |cfg: &std::path::Path| {
        sh(&format!(
            "CGTPROXY_STATE={} {} {} status -c {}",
            cfg.with_extension("state.json").display(),
            ns.enter(),
            bin(),
            cfg.display()
        ))
    };
    let st = status(&cfg);
    assert!(st.contains("bridges: WARNING") && st.contains("TIMES OUT") && st.contains("(br-q1)"), "{st}");
    assert!(st.contains("br-q1, lanq"), "every bridge named: {st}");
    let check = sh(&format!("{} {} check permission -c {} 2>&1", ns.enter(), bin(), cfg.display()));
    assert!(check.contains("TIMES OUT") && check.contains("(br-q1)"), "{check}");
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_eq!(brnf(), "1 1 ");

    // Opted in: off while running, every bridge named, back on stop.
    let opted = format!("version: 1\ngateway-bridge-netfilter-off: true\n{}", &plain["version: 1\n".len()..]);
    let (mut daemon, cfg) = start_daemon(&ns, &opted);
    assert_eq!(brnf(), "0 0 ", "{}", daemon.output());
    let st = status(&cfg);
    assert!(st.contains("filtering is OFF for every bridge here (br-q1, lanq)"), "{st}");
    assert!(daemon.output().contains("filtering is OFF"), "{}", daemon.output());
    let check = sh(&format!("{} {} check permission -c {} 2>&1", ns.enter(), bin(), cfg.display()));
    assert!(check.contains("filtering is OFF for every bridge here (br-q1, lanq)"), "{check}");
    // Killed: the journal lets the next instance without the opt-in put them back.
    daemon.signal(libc::SIGKILL);
    let _ = daemon.stop();
    assert_eq!(brnf(), "0 0 ");
    let state = cfg.with_extension("state.json");
    let mut next = Proc::spawn(&format!("env CGTPROXY_STATE={} {} {} -c {}", state.display(), ns.enter(), bin(), {
        std::fs::write(&*cfg, plain).unwrap();
        cfg.display()
    }));
    next.wait_for("ready", 20);
    assert_eq!(brnf(), "1 1 ", "{}", next.output());
    assert!(next.stop().success(), "{}", next.output());
    assert_clean(&ns);
}

/// Never weaken another firewall: forwarding between this host's own
/// networks (a container to another network's container, to the LAN, to a
/// network made later) is not diverted to the proxy, so the forward path's
/// rules (here iptables-nft rules like Docker's DOCKER-ISOLATION and
/// DOCKER-USER) still decide it; traffic routed out of the host still is.
#[test]
fn gateway_leaves_forwarding_between_local_networks_to_the_firewall() {
    if !root("gateway_leaves_forwarding_between_local_networks_to_the_firewall") || want_broute() {
        return;
    }
    let _vm = beside_vm();
    if !try_sh("command -v iptables").0 {
        eprintln!("SKIPPED: iptables missing (apt-get install iptables; .ci/run does)");
        return;
    }
    let mut lab = Lab::new("gwl");
    let server = Proc::spawn(&format!("{} {} serve LANB 8080", lab.ns("lan-b").enter(), helper()));
    server.wait_for("READY", 10);
    lab.procs.push(server);
    let (mut daemon, _cfg) = start_daemon(&lab.gw, &lab.config(""));
    let (ctr, lana) = ("ctr", "lan-a");
    for proto in ["tcp", "udp"] {
        // Out of the host: proxied. To another local network: forwarded as is.
        lab.expect(ctr, proto, TARGET4, 8080, PROXIED4);
        lab.expect(ctr, proto, "192.0.2.11", 8080, "LANB");
        lab.expect(lana, proto, TARGET4, 8080, PROXIED4);
    }
    // Docker's isolation between networks, and a DOCKER-USER drop, in the
    // forward path (iptables-nft: table ip filter).
    let br = lab.br.clone();
    lab.gw.sh(&format!(
        "iptables -N DOCKER-ISOLATION-STAGE-1 && iptables -N DOCKER-USER \
         && iptables -I FORWARD -j DOCKER-ISOLATION-STAGE-1 && iptables -I FORWARD -j DOCKER-USER \
         && iptables -A DOCKER-ISOLATION-STAGE-1 -i {br} -o lan0 -j DROP"
    ));
    for proto in ["tcp", "udp"] {
        lab.expect(ctr, proto, "192.0.2.11", 8080, "TIMEOUT|ERROR");
        // Still proxied out of the host.
        lab.expect(ctr, proto, TARGET4, 8080, PROXIED4);
    }
    // A network made while the daemon runs joins local-nets at once.
    let late = format!("{}c", &lab.br[..lab.br.len() - 1]);
    lab.bridge(&late, "192.0.2.193/26", "2001:db8:4::1/64");
    // No multicast snooping on the new bridge: its ports' MLD reports would
    // come late and neighbour solicitations be held meanwhile.
    lab.gw.sh(&format!("ip link set {late} type bridge mcast_snooping 0"));
    lab.client("late", &late, "192.0.2.200", "2001:db8:4::200", "192.0.2.193", "2001:db8:4::1");
    let late_srv = Proc::spawn(&format!("{} {} serve LATE 8080", lab.ns("late").enter(), helper()));
    late_srv.wait_for("READY", 10);
    lab.procs.push(late_srv);
    daemon.wait_for("this host's networks changed", 10);
    // Addresses are announced one by one: the IPv4 prefix may be in before
    // the IPv6 one. Wait for both before the checks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lab.gw.sh("nft list set inet cgtproxy local-nets6").contains("2001:db8:4::/64") {
        assert!(std::time::Instant::now() < deadline, "2001:db8:4::/64 never joined local-nets6");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A new IPv6 neighbour: resolved once before the timed checks.
    lab.gw.sh("ping -6 -c1 -W3 2001:db8:4::200 >/dev/null || true");
    for proto in ["tcp", "udp"] {
        lab.expect(ctr, proto, "192.0.2.200", 8080, "LATE");
        // The late bridge's first IPv6 exchange can outlast one attempt
        // (neighbour discovery on both sides of a bridge just made).
        let mut got = String::new();
        for attempt in 1..=4 {
            got = lab.ask(ctr, proto, "2001:db8:4::200", 8080);
            if got.starts_with("LATE") {
                eprintln!("ipv6 {proto} to the late network: attempt {attempt}");
                break;
            }
        }
        assert!(got.starts_with("LATE"), "ctr {proto} 2001:db8:4::200:8080: want LATE, got {got:?}");
    }
    lab.gw.sh("iptables -A DOCKER-USER -d 192.0.2.200 -j DROP");
    for proto in ["tcp", "udp"] {
        lab.expect(ctr, proto, "192.0.2.200", 8080, "TIMEOUT|ERROR");
    }
    let listing = lab.gw.sh("nft list set inet cgtproxy local-nets");
    // lan0, br-…, the peer link and the late network: adjacent /26s.
    assert!(listing.contains("192.0.2.0/24") && listing.contains("198.51.100.0/24"), "{listing}");
    let listing6 = lab.gw.sh("nft list set inet cgtproxy local-nets6");
    assert!(listing6.contains("2001:db8:4::/64") && listing6.contains("2001:db8:1::/64"), "{listing6}");
    assert!(daemon.stop().success(), "{}", daemon.output());
}

/// What TPROXY does to forward rules is said: a DOCKER-USER chain with an
/// admin's rule, firewalld's table and a libvirt table are named by the
/// log at start, `status` and `check permission`; Docker's lone `return`
/// in DOCKER-USER is not.
#[test]
fn gateway_names_forward_rules_that_tproxy_skips() {
    if !root("gateway_names_forward_rules_that_tproxy_skips") || !try_sh("command -v iptables").0 {
        return;
    }
    let _vm = beside_vm();
    let ns = NetNs::new("gwf");
    ns.sh("iptables -N DOCKER-USER && iptables -A DOCKER-USER -j RETURN");
    let config = "version: 1\ntproxies: {px: {mark: 3000, port: 7893}}\ngateway: [{interface: 'br-*', tproxy: px}]\n";
    let status = |cfg: &std::path::Path| {
        sh(&format!(
            "CGTPROXY_STATE={} {} {} status -c {}",
            cfg.with_extension("state.json").display(),
            ns.enter(),
            bin(),
            cfg.display()
        ))
    };
    let (mut daemon, cfg) = start_daemon(&ns, config);
    assert!(!daemon.output().contains("DOCKER-USER"), "{}", daemon.output());
    assert!(!status(&cfg).contains("DOCKER-USER"));
    assert!(daemon.stop().success());
    ns.sh("iptables -I DOCKER-USER -d 192.0.2.3 -j DROP && nft add table inet firewalld \
           && nft add table ip libvirt_network");
    let (mut daemon, cfg) = start_daemon(&ns, config);
    let log = daemon.output();
    for what in ["table ip filter chain DOCKER-USER: 1 rules", "table inet firewalld", "table ip libvirt_network"] {
        assert!(log.contains(what), "log: {what}\n{log}");
        let st = status(&cfg);
        assert!(st.contains("forward rules:") && st.contains(what), "status: {what}\n{st}");
        let check = sh(&format!("{} {} check permission -c {} 2>&1", ns.enter(), bin(), cfg.display()));
        assert!(check.contains(what) && check.contains("`drop` gateway entry or in `bypass`"), "{check}");
    }
    assert!(daemon.stop().success(), "{}", daemon.output());
}

/// VPNs and reverse-path filtering: local (cgroup) and gateway TPROXY with
/// rp_filter=1 and 2 (firewalld, Ubuntu, Fedora), src_valid_mark=1
/// (wg-quick, Tailscale), and the policy rules wg-quick and Tailscale add
/// after cgtproxy started (a default route of their own via a tunnel-like
/// interface that leads nowhere here).
#[test]
fn gateway_and_local_tproxy_under_vpn_settings() {
    if !root("gateway_and_local_tproxy_under_vpn_settings") || want_broute() {
        return;
    }
    let _vm = beside_vm();
    // Tailscale with an exit node and LAN access: table 52 has the default
    // route via the tunnel and `throw` routes for the local networks.
    // wg-quick: a default route in table 51820 via the tunnel, `not fwmark
    // 0xca6c` rules with the kernel's default priority, src_valid_mark=1.
    let wg = "ip link add wgx type veth peer name wgy && ip link set wgx up && ip link set wgy up \
         && ip route add default dev wgx table 51820 && ip -6 route add default dev wgx table 51820 \
         && ip rule add not fwmark 0xca6c table 51820 && ip rule add table main suppress_prefixlength 0 \
         && ip -6 rule add not fwmark 0xca6c table 51820 && ip -6 rule add table main suppress_prefixlength 0 \
         && sysctl -qw net.ipv4.conf.all.src_valid_mark=1";
    let wg_ok = format!("{wg} && sysctl -qw net.ipv4.conf.all.accept_local=1");
    // (name, before the daemon, after it, must work)
    let settings: [(&str, &str, &str, bool); 8] = [
        ("none", "", "", true),
        ("rp_filter=2", "sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2", "", true),
        ("rp_filter=1", "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1", "", true),
        // Forwarded IPv4 cannot work: the source is validated with the
        // tproxy mark, which routes to lo; check/status/log say so.
        ("src_valid_mark=1", "sysctl -qw net.ipv4.conf.all.src_valid_mark=1", "", false),
        (
            "src_valid_mark=1, accept_local=1",
            "sysctl -qw net.ipv4.conf.all.src_valid_mark=1 net.ipv4.conf.all.accept_local=1",
            "",
            true,
        ),
        ("wg-quick before cgtproxy, accept_local=1", &wg_ok, "", true),
        // wg-quick after cgtproxy: its rules get a priority before ours
        // (the kernel's default is the first rule's minus one).
        ("wg-quick after cgtproxy", "", wg, false),
        (
            "tailscale rules after cgtproxy",
            "sysctl -qw net.ipv4.conf.all.accept_local=1",
            "ip link add tsx type veth peer name tsy && ip link set tsx up && ip link set tsy up \
             && ip route add default dev tsx table 52 && ip route add throw 192.0.2.0/24 table 52 \
             && ip route add throw 198.51.100.0/24 table 52 && ip rule add pref 5210 fwmark 0x80000/0xff0000 lookup main \
             && ip rule add pref 5270 lookup 52 && sysctl -qw net.ipv4.conf.all.src_valid_mark=1",
            true,
        ),
    ];
    let mut failures = Vec::new();
    let mut table = String::new();
    for (name, before, after, must) in settings {
        let lab = Lab::new("vpn");
        if !before.is_empty() {
            lab.gw.sh(before);
        }
        let cg = TestCgroups::new("vpn");
        cg.mkdir("proxy");
        let rules = format!("rules:\n  - {{match: '^{0}/proxy', tproxy: px}}\n", cg.rel);
        let (mut daemon, cfg) = start_daemon(&lab.gw, &lab.config(&rules));
        if !after.is_empty() {
            lab.gw.sh(after);
        }
        if name == "src_valid_mark=1" {
            // What cannot work is said by the log, status and check.
            assert!(
                daemon.output().contains("forwarded IPv4 that a tproxy entry takes is DROPPED"),
                "{}",
                daemon.output()
            );
            let st = sh(&format!(
                "CGTPROXY_STATE={} {} {} status -c {}",
                cfg.with_extension("state.json").display(),
                lab.gw.enter(),
                bin(),
                cfg.display()
            ));
            assert!(st.contains("WARNING: net.ipv4.conf.all.src_valid_mark=1"), "{st}");
            let check = sh(&format!("{} {} check permission -c {} 2>&1", lab.gw.enter(), bin(), cfg.display()));
            assert!(check.contains("accept_local=1"), "{check}");
        }
        let mut row = format!("| {name} |");
        for (client, proto, addr, want) in [
            ("ctr", "tcp", TARGET4, PROXIED4),
            ("ctr", "udp", TARGET4, PROXIED4),
            ("ctr", "tcp", TARGET6, PROXIED6),
            ("peer", "tcp", TARGET4, PROXIED4),
        ] {
            let got = lab.ask(client, proto, addr, 8080);
            let ok = got.starts_with(want);
            row.push_str(if ok { " ok |" } else { " FAIL |" });
            if !ok && must {
                failures.push(format!("{name}: {client} {proto} {addr}: {got}"));
            }
        }
        for (proto, addr, want) in [("tcp", TARGET4, PROXIED4), ("udp", TARGET4, PROXIED4), ("tcp", TARGET6, PROXIED6)]
        {
            let cmd = format!(
                "echo $$ > {}/cgroup.procs && exec {} {} client {proto} {addr} 8080 own 1.5",
                cg.dir.join("proxy").display(),
                lab.gw.enter(),
                helper()
            );
            let (_, got) = try_sh(&cmd);
            let ok = got.starts_with(want);
            row.push_str(if ok { " ok |" } else { " FAIL |" });
            if !ok && must {
                failures.push(format!("{name}: local {proto} {addr}: {got}"));
            }
        }
        table.push_str(&row);
        table.push('\n');
        assert!(daemon.stop().success(), "{}", daemon.output());
    }
    eprintln!(
        "| setting | bridged tcp4 | bridged udp4 | bridged tcp6 | routed peer tcp4 | local tcp4 | local udp4 | local tcp6 |\n\
         |---|---|---|---|---|---|---|---|\n{table}"
    );
    assert!(failures.is_empty(), "{}\n{table}", failures.join("\n"));
}
