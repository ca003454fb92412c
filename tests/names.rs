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
