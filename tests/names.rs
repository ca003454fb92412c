//! Attacks by name and by socket (issue 18, items 4, 5 and 9): what an
//! unprivileged user or an app can create (a listener on the tproxy port
//! number, cgroups named after other rules, children of a dropped cgroup,
//! names with control characters or invalid UTF-8) must not change any
//! cgroup's verdict. Each runs the daemon in its own network namespace on
//! its own cgroup subtree.

mod common;
use common::*;

/// The class `cgroup-class` holds for the cgroup at `rel` (relative to
/// the cgroup root), as `nft` lists it.
fn class_at(ns: &NetNs, rel: &str) -> Option<String> {
    let key = format!("{rel}\" : ");
    let text = ns.sh("nft list map inet cgtproxy cgroup-class");
    text.split(['{', ',', '}', '\n']).find_map(|item| {
        let item = item.trim();
        item.contains(&key).then(|| item.rsplit(' ').next().unwrap().to_owned())
    })
}

/// Start the Python program `code` in cgroup directory `dir` inside `ns`,
/// through `wrap` (e.g. setpriv); returns once it printed READY.
fn spawn_in(ns: &NetNs, dir: &std::path::Path, wrap: &str, code: &str) -> Proc {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let file = std::env::temp_dir().join(format!("cgtproxy-test-{}-names-{n}.py", std::process::id()));
    std::fs::write(&file, code).unwrap();
    sh(&format!("chmod 644 {}", file.display()));
    let p = Proc::spawn(&format!(
        "sh -c 'echo $$ > {}/cgroup.procs && exec {} {wrap} /usr/bin/python3 {}'",
        dir.display(),
        ns.enter(),
        file.display()
    ));
    p.wait_for("READY", 10);
    let _ = std::fs::remove_file(&file);
    p
}

/// A plain (not transparent) TCP listener on [::1]:7893 and UDP socket on
/// 127.0.0.1:7893: what any user can open.
const PLAIN_LISTENER: &str = "import socket,time\n\
t=socket.socket(socket.AF_INET6,socket.SOCK_STREAM); t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); t.bind(('::1',7893)); t.listen()\n\
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('127.0.0.1',7893))\n\
print('READY',flush=True); time.sleep(120)";

const NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all";

#[test]
fn an_unprivileged_listener_on_the_tproxy_port_earns_nothing() {
    if !root("an_unprivileged_listener_on_the_tproxy_port_earns_nothing") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("earn");
    cg.mkdir("app");
    cg.mkdir("trusted");
    let rel = cg.rel.clone();
    let config = format!(
        "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nproxy-cgroups: ['^{rel}/trusted$']\n\
         rules:\n  - {{match: '^{rel}/', tproxy: px}}\n"
    );
    let (mut daemon, cfg) = start_daemon(&ns, &config);
    assert_eq!(class_at(&ns, &format!("{rel}/app")).as_deref(), Some("0x00000bb8"));

    // nobody listens on the tproxy port in a proxied cgroup: reported, not pinned.
    let fake = spawn_in(&ns, &cg.dir.join("app"), NOBODY, PLAIN_LISTENER);
    cg.mkdir("app/trigger1");
    let line = daemon.wait_for("not transparent", 10);
    assert!(line.contains(&format!("cgroup {rel}/app on a socket that is not transparent (uid 65534)")), "{line}");
    assert!(line.contains("keeps its rule (tproxy px)"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(class_at(&ns, &format!("{rel}/app")).as_deref(), Some("0x00000bb8"), "still proxied");
    assert!(!daemon.output().contains("kept direct"), "{}", daemon.output());
    let state = cfg.with_extension("state.json");
    let status = ns.sh(&format!("CGTPROXY_STATE={} {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(status.contains(&format!("{rel}/app on a socket that is not transparent")), "{status}");
    drop(fake);

    // The same plain listener, by root, in a cgroup the config trusts: kept direct, and why.
    let trusted = spawn_in(&ns, &cg.dir.join("trusted"), "", PLAIN_LISTENER);
    cg.mkdir("app/trigger2");
    let line = daemon.wait_for("kept direct", 10);
    assert!(line.contains(&format!("{rel}/trusted")) && line.contains("matches proxy-cgroups[0]"), "{line}");
    assert!(wait_until(5, || class_at(&ns, &format!("{rel}/trusted")).as_deref() == Some("0x43475401")));
    assert_eq!(class_at(&ns, &format!("{rel}/app")).as_deref(), Some("0x00000bb8"));
    let status = ns.sh(&format!("CGTPROXY_STATE={} {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(
        status.contains("kept direct so the proxy does not loop") && status.contains("proxy-cgroups[0]"),
        "{status}"
    );
    drop(trusted);
    assert!(daemon.stop().success());
    assert_clean(&ns);
}

#[test]
fn below_a_dropped_cgroup_every_name_stays_dropped() {
    if !root("below_a_dropped_cgroup_every_name_stays_dropped") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("bound");
    let rel = cg.rel.clone();
    // Made before the daemon starts: classified by the first full build.
    cg.mkdir("drop/system.slice/mihomo.service");
    cg.mkdir("reject/app-x.scope");
    // A later, unanchored direct rule that names can be made to match.
    let config = format!(
        "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  \
         - {{match: '^{rel}/drop$', drop: true}}\n  - {{match: '^{rel}/reject$', reject: true}}\n  \
         - {{match: 'mihomo\\.service', direct: true}}\n  - {{match: 'app-x\\.scope', direct: true}}\n  \
         - {{match: '^{rel}/', tproxy: px}}\n"
    );
    let (mut daemon, _cfg) = start_daemon(&ns, &config);
    const DROP: &str = "0x43475402";
    const REJECT: &str = "0x43475403";
    let at = |sub: &str| class_at(&ns, &format!("{rel}/{sub}"));
    assert_eq!(at("drop/system.slice/mihomo.service").as_deref(), Some(DROP));
    assert_eq!(at("reject/app-x.scope").as_deref(), Some(REJECT));
    // Made while it runs, at any depth.
    cg.mkdir("drop/app-x.scope");
    cg.mkdir("drop/a/b/c/mihomo.service");
    cg.mkdir("reject/x/mihomo.service");
    cg.mkdir("free/mihomo.service");
    assert!(wait_until(5, || at("free/mihomo.service").as_deref() == Some("0x43475401")), "{}", daemon.output());
    assert_eq!(at("drop/app-x.scope").as_deref(), Some(DROP));
    assert_eq!(at("drop/a/b/c/mihomo.service").as_deref(), Some(DROP));
    assert_eq!(at("reject/x/mihomo.service").as_deref(), Some(REJECT));
    assert_eq!(at("drop/a").as_deref(), Some(DROP), "the catch-all tproxy rule is bound too");
    // explain says why.
    let explain = ns.sh(&format!("{} -c {} explain {rel}/drop/app-x.scope", bin(), _cfg.display()));
    assert!(explain.contains(&format!("bound: its ancestor {rel}/drop matches rule 0")), "{explain}");
    // The traffic: a UDP send from the child fails (the drop verdict), whatever its name says.
    ns.sh("ip link add cgt-d0 type veth peer name cgt-d1 && ip link set cgt-d0 up && ip link set cgt-d1 up && ip addr add 192.0.2.1/24 dev cgt-d0");
    let send = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ntry:\n s.sendto(b'x',('192.0.2.9',9999)); print('SENT',flush=True)\nexcept OSError as e:\n print('REFUSED',e.errno,flush=True)\nprint('READY',flush=True)\n";
    let p = spawn_in(&ns, &cg.dir.join("drop/app-x.scope"), "", send);
    assert!(p.output().contains("REFUSED 1"), "{}", p.output());
    drop(p);
    assert!(daemon.stop().success());
    assert_clean(&ns);
}

#[test]
fn names_are_bytes_and_are_printed_escaped() {
    use std::os::unix::ffi::OsStrExt;
    if !root("names_are_bytes_and_are_printed_escaped") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("bytes");
    let rel = cg.rel.clone();
    cg.mkdir("app");
    let config = format!("version: 1\nrules:\n  - {{match: '^{rel}/app/n', drop: true}}\n");
    let (mut daemon, cfg) = start_daemon(&ns, &config);
    let app = cg.dir.join("app");
    let name = |b: &[u8]| app.join(std::ffi::OsStr::from_bytes(b));
    // Two siblings differing only in an invalid byte, made while it runs.
    for n in [&b"n\xff"[..], b"n\xfe"] {
        std::fs::create_dir(name(n)).unwrap();
    }
    let drops = || ns.sh("nft list map inet cgtproxy cgroup-class").matches(": 0x43475402").count();
    assert!(wait_until(5, || drops() == 2), "both classified: {}", ns.sh("nft list map inet cgtproxy cgroup-class"));
    let ids: Vec<u64> = [&b"n\xff"[..], b"n\xfe"].iter().map(|n| cgtproxy::cgroup::id_of(&name(n)).unwrap()).collect();
    // Removing one leaves the other classified.
    std::fs::remove_dir(name(b"n\xff")).unwrap();
    cg.mkdir("app/trigger");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(drops(), 1, "{}", ns.sh("nft list map inet cgtproxy cgroup-class"));
    // explain by PID reads the cgroup's bytes and names the same path.
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(name(b"n\xfe").join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let explain = ns.sh(&format!("{} -c {} explain {}", bin(), cfg.display(), sleeper.id()));
    assert!(explain.contains(&format!("cgroup {rel}/app/n\u{fffd}fe (id {}", ids[1])), "{explain}");
    assert!(explain.contains("cgroup-class holds 0x43475402"), "{explain}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // A name that would rewrite a terminal and forge a log line.
    let evil = b"n-evil\x1b[2J\rINFO cgtproxy: forged";
    std::fs::create_dir(name(evil)).unwrap();
    let line = daemon.wait_for("n-evil", 10);
    assert!(line.contains("n-evil\\x1b[2J\\x0dINFO cgtproxy: forged"), "{line:?}");
    let state = cfg.with_extension("state.json");
    let status = ns.sh(&format!("CGTPROXY_STATE={} {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(status.contains("n-evil\\x1b[2J\\x0dINFO"), "{status}");
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(name(evil).join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let explain = ns.sh(&format!("{} -c {} explain {}", bin(), cfg.display(), sleeper.id()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(explain.contains("n-evil\\x1b[2J\\x0dINFO"), "{explain}");
    for out in [daemon.output(), status, explain] {
        assert!(!out.contains('\x1b') && !out.contains('\r'), "raw control characters: {out:?}");
    }
    assert!(daemon.stop().success());
    assert_clean(&ns);
}
