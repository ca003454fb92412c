//! Gateway mode figures for docs/benchmarks.md (run as root):
//!
//!     cargo bench --bench gateway
//!
//! A client namespace behind a bridge of a gateway namespace (br_netfilter's
//! bridge-nf-call-iptables at 1), a remote host behind the gateway. Forwarded
//! TCP connections per second and one-connection throughput: plain
//! forwarding without cgtproxy, with cgtproxy running and the client
//! unmatched (direct), and through the TPROXY listener. Prints a Markdown
//! table; nothing asserts a time.

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

const TARGET: &str = "203.0.113.2";
const RUNS: usize = 3;
const CONNS: usize = 2000;
const MIB: usize = 512;

struct Lab {
    gw: NetNs,
    remote: NetNs,
    /// lan-a: proxied (cps), lan-b: unmatched, lan-c: proxied (bulk sink).
    clients: Vec<NetNs>,
    _procs: Vec<Proc>,
}

fn lab() -> Lab {
    let gw = NetNs::new("bgw");
    let remote = NetNs::new("brem");
    gw.sh(
        "sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1",
    );
    sh(&format!("ip link add up0 netns {} type veth peer name down0 netns {}", gw.name, remote.name));
    gw.sh("ip link set up0 up && ip addr add 198.51.100.1/24 dev up0 && ip route add default via 198.51.100.2 \
           && ip link add lan0 type bridge && ip link set lan0 up && ip addr add 192.0.2.1/24 dev lan0");
    remote.sh(&format!(
        "ip link set down0 up && ip addr add 198.51.100.2/24 dev down0 && ip addr add {TARGET}/32 dev lo \
         && ip route add 192.0.2.0/24 via 198.51.100.1"
    ));
    let mut clients = Vec::new();
    for (i, n) in [10, 11, 12].into_iter().enumerate() {
        let ns = NetNs::new(&format!("bc{i}"));
        sh(&format!("ip link add p{i} netns {} type veth peer name eth0 netns {}", gw.name, ns.name));
        gw.sh(&format!("ip link set p{i} master lan0 && ip link set p{i} up"));
        ns.sh(&format!(
            "ip link set eth0 up && ip addr add 192.0.2.{n}/24 dev eth0 && ip route add default via 192.0.2.1"
        ));
        clients.push(ns);
    }
    let spawn = |ns: &NetNs, args: &str| {
        let p = Proc::spawn(&format!("{} {} {args}", ns.enter(), helper()));
        p.wait_for("READY", 10);
        p
    };
    let procs = vec![
        spawn(&remote, "serve REMOTE 8080"),
        spawn(&remote, "sink 8081"),
        spawn(&gw, "tproxy 7893"),
        spawn(&gw, "sink 7894 transparent"),
    ];
    Lab { gw, remote, clients, _procs: procs }
}

const CONFIG: &str = "version: 1\n\
    gateway-bridge-netfilter-off: true\n\
    tproxies:\n\
    \x20 px: {mark: 3000, port: 7893}\n\
    \x20 sink: {mark: 3001, port: 7894}\n\
    gateway:\n\
    \x20 - {interface: lan0, source: [192.0.2.10/32], tproxy: px}\n\
    \x20 - {interface: lan0, source: [192.0.2.12/32], tproxy: sink}\n";

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median of RUNS: connections per second from `client` to TARGET:8080.
fn cps(lab: &Lab, client: usize) -> u64 {
    median(
        (0..RUNS)
            .map(|_| {
                let out = lab.clients[client].sh(&format!("{} cps {TARGET} 8080 {CONNS}", helper()));
                out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("cps: {out}"))
            })
            .collect(),
    )
}

/// Median of RUNS: MiB/s over one connection from `client` to TARGET:8081.
fn bulk(lab: &Lab, client: usize) -> (u64, String) {
    let mut answers = String::new();
    let runs = (0..RUNS)
        .map(|_| {
            let out = lab.clients[client].sh(&format!("{} bulk {TARGET} 8081 {MIB}", helper()));
            answers = out.trim().to_owned();
            out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bulk: {out}"))
        })
        .collect();
    (median(runs), answers)
}

/// The filter and nat rules dockerd 20.10 writes for a bridge (here lan0
/// plays docker0), with the FORWARD policy DROP, as iptables-nft rules.
fn docker_rules(gw: &NetNs) {
    gw.sh("iptables -N DOCKER && iptables -N DOCKER-ISOLATION-STAGE-1 && iptables -N DOCKER-ISOLATION-STAGE-2 \
         && iptables -N DOCKER-USER && iptables -P FORWARD DROP \
         && iptables -A FORWARD -j DOCKER-USER && iptables -A FORWARD -j DOCKER-ISOLATION-STAGE-1 \
         && iptables -A FORWARD -o lan0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT \
         && iptables -A FORWARD -o lan0 -j DOCKER && iptables -A FORWARD -i lan0 ! -o lan0 -j ACCEPT \
         && iptables -A FORWARD -i lan0 -o lan0 -j ACCEPT \
         && iptables -A DOCKER-ISOLATION-STAGE-1 -i lan0 ! -o lan0 -j DOCKER-ISOLATION-STAGE-2 \
         && iptables -A DOCKER-ISOLATION-STAGE-1 -j RETURN && iptables -A DOCKER-ISOLATION-STAGE-2 -o lan0 -j DROP \
         && iptables -A DOCKER-ISOLATION-STAGE-2 -j RETURN && iptables -A DOCKER-USER -j RETURN \
         && iptables -t nat -N DOCKER && iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER \
         && iptables -t nat -A POSTROUTING -s 192.0.2.0/24 ! -o lan0 -j MASQUERADE \
         && iptables -t nat -A DOCKER -i lan0 -j RETURN");
}

fn main() {
    if !root("bench gateway") {
        return;
    }
    let lab = lab();
    // CGTPROXY_BENCH_DOCKER_RULES=1: with Docker's filter and nat rules.
    let docker = std::env::var_os("CGTPROXY_BENCH_DOCKER_RULES").is_some();
    if docker {
        docker_rules(&lab.gw);
    }
    println!("Docker's iptables rules present: {docker}");
    let plain_cps = cps(&lab, 1);
    let (plain_bulk, _) = bulk(&lab, 1);
    let (mut daemon, _cfg) = start_daemon(&lab.gw, CONFIG);
    let mode = lab.gw.sh("sysctl -n net.bridge.bridge-nf-call-iptables");
    let direct_cps = cps(&lab, 1);
    let (direct_bulk, _) = bulk(&lab, 1);
    let proxied_cps = cps(&lab, 0);
    let (proxied_bulk, answer) = bulk(&lab, 2);
    // The TPROXY listener, not the remote host, must have answered.
    let remote_saw = lab.remote.sh("ss -tn state established | wc -l");
    daemon.stop();
    println!("bridge-nf-call-iptables while running: {} (1 = brouting, 0 = the no-broute fallback)", mode.trim());
    println!("last proxied bulk answer: {answer} (remote sockets: {})", remote_saw.trim());
    println!(
        "| forwarded TCP, client behind a bridge | conn/s (median of {RUNS} × {CONNS}) | MiB/s, one connection (median of {RUNS} × {MIB} MiB) |"
    );
    println!("|---|---|---|");
    println!("| plain forwarding, no cgtproxy | {plain_cps} | {plain_bulk} |");
    println!("| cgtproxy running, client unmatched (direct) | {direct_cps} | {direct_bulk} |");
    println!("| through the TPROXY listener | {proxied_cps} | {proxied_bulk} |");
}
