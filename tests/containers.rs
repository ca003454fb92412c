//! Gateway mode against a real container engine: Debian's `dockerd`
//! (docker.io 20.10), started by the test inside its own network namespace
//! (and a private mount namespace: its mounts die with it), with its own
//! data and exec roots, an image made offline (`docker import` of a tar
//! holding the host's static busybox), and torn down completely. The
//! containers only run `sleep`: the clients and servers are the test's
//! helper, started inside a container's network namespace with `nsenter`.
//!
//! ```text
//!  c0   198.51.100.2   docker0 (--bip 198.51.100.1/26) ┐
//!  a1   198.51.100.66  br-… net-a  (before cgtproxy)  ├ gw ── up0 192.0.2.1 ─── remote 192.0.2.2
//!  b1   198.51.100.130 br-… net-b  (after cgtproxy)   │  (dockerd, cgtproxy,      serves REMOTE on :8080,
//!  i1,i2 198.51.100.19x br-… net-icc (enable_icc=false)┘   TPROXY :7893)          203.0.113.2 on lo
//! ```
//!
//! Skips with a message where `dockerd` is missing (`apt-get install
//! docker.io`; .ci/run does).

mod common;
use common::*;

const TARGET: &str = "203.0.113.2";
const PROXIED: &str = "TPROXY 7893 203.0.113.2:8080";

struct Docker {
    dir: TempDir,
    dockerd: Proc,
    sock: String,
}

impl Docker {
    /// dockerd in `ns`, in a private mount namespace with its own /run
    /// (dockerd and its containerd make /run/docker and /run/containerd
    /// whatever their roots say: the host's must not gain them), its state
    /// below a temporary directory, iptables on, docker0 on a documentation
    /// prefix.
    fn start(ns: &NetNs, dir: TempDir) -> Self {
        let sock = format!("unix://{}/docker.sock", dir.0.display());
        let dockerd = Self::spawn(ns, &dir, &sock);
        Docker { dir, dockerd, sock }
    }

    fn spawn(ns: &NetNs, dir: &TempDir, sock: &str) -> Proc {
        let d = dir.0.display().to_string();
        let dockerd = Proc::spawn(&format!(
            "{} unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run && exec dockerd \
             --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/docker.pid -H {sock} --iptables=true --ip6tables=false --bip 198.51.100.1/26 \
             --storage-driver vfs --exec-opt native.cgroupdriver=cgroupfs --userland-proxy=false \
             --cgroup-parent /{}'",
            ns.enter(),
            cgroup_parent()
        ));
        dockerd.wait_for("API listen on", 60);
        dockerd
    }

    /// Stop dockerd and start it again on the same state.
    fn restart(&mut self, ns: &NetNs) {
        self.stop();
        self.dockerd = Self::spawn(ns, &self.dir, &self.sock);
    }

    fn cli(&self, args: &str) -> String {
        sh(&format!("docker -H {} {args}", self.sock))
    }

    fn try_cli(&self, args: &str) -> (bool, String) {
        try_sh(&format!("docker -H {} {args} 2>&1", self.sock))
    }

    /// The image: /bin/busybox and its applets, nothing else.
    fn import_busybox(&self) {
        let root = self.dir.0.join("rootfs");
        sh(&format!(
            "mkdir -p {r}/bin && cp /bin/busybox {r}/bin/ && for a in sh sleep; do ln -sf busybox {r}/bin/$a; done \
             && tar -C {r} -cf {r}.tar . && docker -H {} import {r}.tar cgtproxy-test-busybox:1 >/dev/null",
            self.sock,
            r = root.display()
        ));
    }

    /// `docker run -d` a sleeping container; returns its pid.
    fn run(&self, name: &str, args: &str) -> u32 {
        self.cli(&format!("run -d --name {name} {args} cgtproxy-test-busybox:1 sleep 3600"));
        self.pid(name)
    }

    fn pid(&self, name: &str) -> u32 {
        self.cli(&format!("inspect -f '{{{{.State.Pid}}}}' {name}")).trim().parse().unwrap()
    }

    fn ip(&self, name: &str) -> String {
        self.cli(&format!("inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' {name}"))
            .trim()
            .to_owned()
    }

    /// SIGTERM to dockerd and wait for it (and its containerd) to go.
    fn stop(&self) {
        let pidfile = self.dir.0.join("docker.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid: i32 = pid.trim().parse().unwrap_or(0);
            if pid > 0 {
                // SAFETY: signalling the dockerd this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                // SAFETY: signal 0 only asks whether the process exists.
                wait_until(30, || unsafe { libc::kill(pid, 0) } != 0);
            }
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = self.try_cli("rm -f $(docker -H SOCK ps -aq)".replace("SOCK", &self.sock).as_str());
        self.stop();
        remove_cgroup_parent();
        let _ = std::process::Command::new("rm").args(["-rf", &self.dir.0.display().to_string()]).status();
    }
}

/// The cgroup every container of the test goes below, in every hierarchy
/// (cgroupfs driver; this host is hybrid: v1 controllers and cgroup2 at
/// /sys/fs/cgroup/unified), removed at the end.
fn cgroup_parent() -> String {
    format!("cgtproxy-test-docker-{}", std::process::id())
}

fn remove_cgroup_parent() {
    remove_parent(&cgroup_parent());
}

/// `name` below the root of every cgroup hierarchy, deepest first.
fn remove_parent(name: &str) {
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        remove_tree(&h.path().join(name));
    }
}

/// The helper in a container's network namespace.
fn in_ctr(pid: u32, what: &str) -> String {
    format!("nsenter --net=/proc/{pid}/ns/net {} {what}", helper())
}

fn ask(pid: u32, proto: &str, addr: &str, port: u16) -> String {
    let (_, out) = try_sh(&in_ctr(pid, &format!("client {proto} {addr} {port} t{pid} 1.5")));
    out.trim().to_owned()
}

#[track_caller]
fn expect(who: &str, pid: u32, proto: &str, addr: &str, port: u16, want: &str) {
    let got = ask(pid, proto, addr, port);
    assert!(want.split('|').any(|w| got.starts_with(w)), "{who} {proto} {addr}:{port}: want {want:?}, got {got:?}");
}

fn host_view() -> String {
    sh("nft list ruleset; ip -br link; ip rule; sysctl net.ipv4.ip_forward; \
        ls -d /run/docker /run/containerd /run/containers /run/libpod /run/netns/netns-* 2>/dev/null; true")
}

/// Docker's own isolation survives gateway mode: inter-network isolation,
/// a DOCKER-USER drop for a directly connected destination, `icc=false`
/// (with br_netfilter left on, the default), published ports, a dockerd
/// restart; containers on docker0 and on user networks (made before and
/// after cgtproxy started) are proxied over TCP and UDP. The host's own
/// namespace is not touched.
#[test]
fn docker_keeps_its_isolation_under_gateway_mode() {
    if !root("docker_keeps_its_isolation_under_gateway_mode") {
        return;
    }
    if !try_sh("command -v dockerd && command -v docker && command -v iptables").0 {
        eprintln!(
            "SKIPPED docker_keeps_its_isolation_under_gateway_mode: dockerd missing (apt-get install docker.io; .ci/run does)"
        );
        return;
    }
    let host_before = host_view();
    let gw = NetNs::new("dk");
    let remote = NetNs::new("dkr");
    sh(&format!("ip link add up0 netns {} type veth peer name down0 netns {}", gw.name, remote.name));
    gw.sh("ip link set up0 up && ip addr add 192.0.2.1/24 dev up0 && ip route add default via 192.0.2.2 \
           && sysctl -qw net.ipv4.ip_forward=1");
    remote.sh(&format!(
        "ip link set down0 up && ip addr add 192.0.2.2/24 dev down0 && ip addr add {TARGET}/32 dev lo \
         && ip route add 198.51.100.0/24 via 192.0.2.1"
    ));
    let serve = Proc::spawn(&format!("{} {} serve REMOTE 8080", remote.enter(), helper()));
    serve.wait_for("READY", 10);
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", gw.enter(), helper()));
    tproxy.wait_for("READY", 10);

    let docker = Docker::start(&gw, TempDir::new("dockerd"));
    docker.import_busybox();
    docker.cli("network create --subnet 198.51.100.64/26 net-a");
    docker.cli("network create --subnet 198.51.100.192/26 -o com.docker.network.bridge.enable_icc=false net-icc");
    let c0 = docker.run("c0", "");
    let a1 = docker.run("a1", "--network net-a");
    let i1 = docker.run("i1", "--network net-icc");
    let i2 = docker.run("i2", "--network net-icc");
    let i2_ip = docker.ip("i2");
    let i2_srv = Proc::spawn(&in_ctr(i2, "serve I2 8080"));
    i2_srv.wait_for("READY", 10);
    assert_eq!(gw.sh("sysctl -n net.bridge.bridge-nf-call-iptables").trim(), "1", "Docker turns br_netfilter on");

    let config = |opt_in: bool| {
        format!(
            "version: 1\n{}tproxies: {{px: {{mark: 3000, port: 7893}}}}\n\
             gateway:\n  - {{interface: 'br-*', tproxy: px}}\n  - {{interface: docker0, tproxy: px}}\n",
            if opt_in { "gateway-bridge-netfilter-off: true\n" } else { "" }
        )
    };
    // 1. The default: br_netfilter stays on, so icc=false holds; on this
    // kernel (no brouting) TPROXY of bridged containers cannot work, and
    // cgtproxy says so instead of switching br_netfilter off.
    let (mut daemon, cfg) = start_daemon(&gw, &config(false));
    assert_eq!(gw.sh("sysctl -n net.bridge.bridge-nf-call-iptables").trim(), "1");
    expect("i1 (icc=false)", i1, "tcp", &i2_ip, 8080, "TIMEOUT|ERROR");
    let status = sh(&format!(
        "CGTPROXY_STATE={} {} {} status -c {}",
        cfg.with_extension("state.json").display(),
        gw.enter(),
        bin(),
        cfg.display()
    ));
    let can_broute = status.contains("bridges: broute");
    if !can_broute {
        assert!(status.contains("TIMES OUT") && status.contains("docker0"), "{status}");
    }
    assert!(daemon.stop().success(), "{}", daemon.output());

    // 2. Opted in: bridged containers proxied; isolation between networks and
    // DOCKER-USER still decide forwarding between the host's networks.
    let (mut daemon, cfg) = start_daemon(&gw, &config(true));
    docker.cli("network create --subnet 198.51.100.128/26 net-b");
    let b1 = docker.run("b1", "--network net-b -p 8081:8080");
    let b1_ip = docker.ip("b1");
    let b1_srv = Proc::spawn(&in_ctr(b1, "serve B1 8080"));
    b1_srv.wait_for("READY", 10);
    for proto in ["tcp", "udp"] {
        for (who, pid) in [("c0", c0), ("a1", a1), ("b1", b1)] {
            expect(who, pid, proto, TARGET, 8080, PROXIED);
        }
        // A directly connected destination (the uplink's LAN) is forwarded, not proxied.
        expect("a1", a1, proto, "192.0.2.2", 8080, "REMOTE");
        // Docker's inter-network isolation holds.
        expect("a1 -> net-b", a1, proto, &b1_ip, 8080, "TIMEOUT|ERROR");
        expect("c0 -> net-b", c0, proto, &b1_ip, 8080, "TIMEOUT|ERROR");
    }
    // A DOCKER-USER drop for a LAN host applies.
    gw.sh("iptables -I DOCKER-USER -d 192.0.2.2 -j DROP");
    expect("a1 (DOCKER-USER)", a1, "tcp", "192.0.2.2", 8080, "TIMEOUT|ERROR");
    gw.sh("iptables -D DOCKER-USER -d 192.0.2.2 -j DROP");
    // Published port, from outside.
    let (_, got) = remote.try_sh(&format!("{} client tcp 192.0.2.1 8081 pub 2", helper()));
    assert!(got.starts_with("B1"), "published port: {got}");
    // status names the bridges whose filtering is off.
    let status = sh(&format!(
        "CGTPROXY_STATE={} {} {} status -c {}",
        cfg.with_extension("state.json").display(),
        gw.enter(),
        bin(),
        cfg.display()
    ));
    if !can_broute {
        assert!(status.contains("filtering is OFF for every bridge here") && status.contains("docker0"), "{status}");
    }
    // A DOCKER-USER drop for an outside address is skipped by TPROXY: said by status.
    gw.sh(&format!("iptables -I DOCKER-USER -d {TARGET} -j DROP"));
    let status = sh(&format!(
        "CGTPROXY_STATE={} {} {} status -c {}",
        cfg.with_extension("state.json").display(),
        gw.enter(),
        bin(),
        cfg.display()
    ));
    assert!(status.contains("forward rules:") && status.contains("chain DOCKER-USER"), "{status}");
    gw.sh(&format!("iptables -D DOCKER-USER -d {TARGET} -j DROP"));

    // 3. dockerd restarts (it rewrites its iptables chains): still proxied,
    // still isolated.
    let mut docker = docker;
    docker.restart(&gw);
    docker.cli("start c0 a1 b1");
    let (c0, a1) = (docker.pid("c0"), docker.pid("a1"));
    let b1 = docker.pid("b1");
    let b1_srv2 = Proc::spawn(&in_ctr(b1, "serve B1 8080"));
    b1_srv2.wait_for("READY", 10);
    for proto in ["tcp", "udp"] {
        expect("c0 after restart", c0, proto, TARGET, 8080, PROXIED);
        expect("a1 after restart", a1, proto, &docker.ip("b1"), 8080, "TIMEOUT|ERROR");
    }
    assert!(daemon.stop().success(), "{}", daemon.output());
    assert_eq!(gw.sh("sysctl -n net.bridge.bridge-nf-call-iptables").trim(), "1");
    assert!(!gw.sh("nft list ruleset").contains("cgtproxy"));
    drop((i2_srv, b1_srv, b1_srv2));
    drop(docker);
    drop((serve, tproxy));
    drop((gw, remote));
    assert_eq!(host_view(), host_before, "the host's own namespace changed");
    let left = sh(&format!("find /sys/fs/cgroup -maxdepth 2 -name {}", cgroup_parent()));
    assert_eq!(left.trim(), "", "container cgroups left");
}

/// The uplink both engines' tests use: `gw` routes to `remote`
/// (192.0.2.0/24), which serves REMOTE on :8080 at 192.0.2.2 and TARGET;
/// a TPROXY listener on :7893 in `gw`.
fn uplink(tag: &str) -> (NetNs, NetNs, Vec<Proc>) {
    let gw = NetNs::new(tag);
    let remote = NetNs::new(&format!("{tag}r"));
    sh(&format!("ip link add up0 netns {} type veth peer name down0 netns {}", gw.name, remote.name));
    gw.sh("ip link set up0 up && ip addr add 192.0.2.1/24 dev up0 && ip route add default via 192.0.2.2 \
           && sysctl -qw net.ipv4.ip_forward=1");
    remote.sh(&format!(
        "ip link set down0 up && ip addr add 192.0.2.2/24 dev down0 && ip addr add {TARGET}/32 dev lo \
         && ip route add 198.51.100.0/24 via 192.0.2.1"
    ));
    let serve = Proc::spawn(&format!("{} {} serve REMOTE 8080", remote.enter(), helper()));
    serve.wait_for("READY", 10);
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", gw.enter(), helper()));
    tproxy.wait_for("READY", 10);
    (gw, remote, vec![serve, tproxy])
}

/// Rootful Podman with netavark, in the test's network namespace and one
/// private mount namespace held by a sleeping process (with its own /run:
/// netavark's /run/containers/networks and runc's /run/runc go there, not
/// to the host's; and its own /run/netns, where podman mounts the
/// containers' namespaces), state below a temporary directory. Networks
/// are made without DNS: an aardvark-dns would outlive the test.
struct Podman {
    dir: TempDir,
    holder: Proc,
}

impl Podman {
    fn cmd(&self, args: &str) -> String {
        let d = self.dir.0.display();
        // Lower rlimits than podman's defaults: this host's hard limits are
        // below them and runc may not raise them.
        format!(
            "nsenter --target {} --mount --net podman --root {d}/root --runroot {d}/run \
             --network-config-dir {d}/net --cgroup-manager cgroupfs --events-backend file \
             --network-backend netavark --tmpdir {d}/tmp {args}",
            self.holder.child.id()
        )
    }

    fn cli(&self, args: &str) -> String {
        sh(&self.cmd(args))
    }

    fn run(&self, name: &str, net: &str) -> u32 {
        self.cli(&format!(
            "run -d --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --cgroup-parent /{} --name {name} \
             --network {net} localhost/cgtproxy-test-busybox:1 sleep 3600",
            podman_parent()
        ));
        self.cli(&format!("inspect -f '{{{{.State.Pid}}}}' {name}")).trim().parse().unwrap()
    }

    fn ip(&self, name: &str) -> String {
        self.cli(&format!("inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' {name}"))
            .trim()
            .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = try_sh(&self.cmd("rm -f -t 0 -a"));
        let _ = try_sh(&self.cmd("network rm -f pa pb"));
        remove_parent(&podman_parent());
        let _ = std::process::Command::new("rm").args(["-rf", &self.dir.0.display().to_string()]).status();
    }
}

fn podman_parent() -> String {
    format!("cgtproxy-test-podman-{}", std::process::id())
}

/// Podman (netavark) bridges under gateway mode: containers proxied, an
/// `isolate=true` network still isolated, the LAN reached directly.
#[test]
fn podman_keeps_its_isolation_under_gateway_mode() {
    if !root("podman_keeps_its_isolation_under_gateway_mode") {
        return;
    }
    if !try_sh("command -v podman && command -v iptables && test -x /usr/lib/podman/netavark").0 {
        eprintln!(
            "SKIPPED podman_keeps_its_isolation_under_gateway_mode: podman missing (apt-get install podman; .ci/run does)"
        );
        return;
    }
    let host_before = host_view();
    let aardvark = || try_sh("pgrep -x aardvark-dns").1;
    let aardvark_before = aardvark();
    let (gw, _remote, procs) = uplink("pm");
    let holder = Proc::spawn(&format!(
        "{} unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run && mkdir /run/netns \
         && mount -t tmpfs tmpfs /run/netns && echo READY && exec sleep 3600'",
        gw.enter()
    ));
    holder.wait_for("READY", 10);
    let podman = Podman { dir: TempDir::new("podman"), holder };
    let root = podman.dir.0.join("rootfs");
    sh(&format!(
        "mkdir -p {r}/bin && cp /bin/busybox {r}/bin/ && ln -sf busybox {r}/bin/sleep && tar -C {r} -cf {r}.tar .",
        r = root.display()
    ));
    podman.cli(&format!("import {}.tar localhost/cgtproxy-test-busybox:1", root.display()));
    podman.cli("network create --disable-dns --subnet 198.51.100.64/26 --opt isolate=true pa");
    podman.cli("network create --disable-dns --subnet 198.51.100.128/26 --opt isolate=true pb");
    let a1 = podman.run("a1", "pa");
    let b1 = podman.run("b1", "pb");
    let b1_ip = podman.ip("b1");
    let b1_srv = Proc::spawn(&in_ctr(b1, "serve B1 8080"));
    b1_srv.wait_for("READY", 10);
    // netavark's isolation, before cgtproxy.
    expect("a1 -> pb (no cgtproxy)", a1, "tcp", &b1_ip, 8080, "TIMEOUT|ERROR");
    let config = "version: 1\ngateway-bridge-netfilter-off: true\ntproxies: {px: {mark: 3000, port: 7893}}\n\
                  gateway: [{interface: 'podman*', tproxy: px}]\n";
    let (mut daemon, _cfg) = start_daemon(&gw, config);
    for proto in ["tcp", "udp"] {
        expect("a1", a1, proto, TARGET, 8080, PROXIED);
        expect("b1", b1, proto, TARGET, 8080, PROXIED);
        expect("a1 -> LAN", a1, proto, "192.0.2.2", 8080, "REMOTE");
        expect("a1 -> pb (isolate=true)", a1, proto, &b1_ip, 8080, "TIMEOUT|ERROR");
    }
    assert!(daemon.stop().success(), "{}", daemon.output());
    drop(b1_srv);
    drop(podman);
    drop(procs);
    drop(gw);
    assert_eq!(host_view(), host_before, "the host's own namespace changed");
    assert_eq!(aardvark(), aardvark_before, "an aardvark-dns outlived the test");
    let left = sh(&format!("find /sys/fs/cgroup -maxdepth 2 -name {}", podman_parent()));
    assert_eq!(left.trim(), "", "container cgroups left");
}
