//! The proxy-loop guard with real listeners: a TPROXY server running in a
//! cgroup its rules proxy is found with sock_diag and kept direct.

mod common;
use common::*;

/// The class `cgroup-class` holds for the test cgroup `sub`, as `nft` lists it.
fn class_of(ns: &NetNs, cg: &TestCgroups, sub: &str) -> Option<String> {
    let key = format!("{}/{sub}\" : ", cg.rel);
    let text = ns.sh("nft list map inet cgtproxy cgroup-class");
    text.split(['{', ',', '}', '\n']).find_map(|item| {
        let item = item.trim();
        item.contains(&key).then(|| item.rsplit(' ').next().unwrap().to_owned())
    })
}

#[test]
fn listener_in_a_proxied_cgroup_is_kept_direct() {
    if !root("listener_in_a_proxied_cgroup_is_kept_direct") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("guard");
    cg.mkdir("proxy");
    cg.mkdir("late");
    cg.mkdir("app");
    let rel = cg.rel.clone();
    // Everything in the test subtree is proxied, the proxy's cgroup too.
    let config = format!(
        "version: 1\ntproxies: {{px: {{mark: 3000, port: 7893}}}}\nrules:\n  - {{match: '^{rel}/', tproxy: px}}\n"
    );
    let start_proxy = |sub: &str| {
        let p = Proc::spawn(&format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec {} {} tproxy 7893'",
            cg.dir.join(sub).display(),
            ns.enter(),
            helper()
        ));
        p.wait_for("READY", 10);
        p
    };
    let mut proxy = start_proxy("proxy");
    let (mut daemon, cfg) = start_daemon(&ns, &config);
    let line = daemon.wait_for("kept direct", 10);
    assert!(
        line.contains(&format!("tproxy px (tcp port 7893), tproxy px (udp port 7893) listens in cgroup {rel}/proxy")),
        "{line}"
    );
    daemon.wait_for(&format!("classified {rel}/proxy: direct (proxy-loop guard)"), 10);
    assert_eq!(class_of(&ns, &cg, "proxy").as_deref(), Some("0x43475401"), "the proxy's cgroup is direct");
    assert_eq!(class_of(&ns, &cg, "app").as_deref(), Some("0x00000bb8"), "other cgroups keep their rule");
    let state = cfg.with_extension("state.json");
    let status = ns.sh(&format!("CGTPROXY_STATE={} {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(
        status.contains("proxy guard:")
            && status.contains(&format!("{rel}/proxy, which the rules send to tproxy px: kept direct")),
        "{status}"
    );

    let explain =
        ns.sh(&format!("CGTPROXY_STATE={} {} -c {} explain {rel}/proxy", state.display(), bin(), cfg.display()));
    assert!(explain.contains("proxy guard: ") && explain.contains("kept direct"), "{explain}");
    assert!(explain.contains("effective: direct"), "{explain}");

    // The proxy stops: at the next cgroup event its cgroup follows its rule again.
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    cg.mkdir("app/trigger1");
    daemon.wait_for("follows its rules again", 10);
    assert!(wait_until(5, || class_of(&ns, &cg, "proxy").as_deref() == Some("0x00000bb8")));

    // A proxy started later in an existing cgroup: found at the next event.
    proxy = start_proxy("late");
    cg.mkdir("app/trigger2");
    let line = daemon.wait_for("kept direct", 10);
    assert!(line.contains(&format!("{rel}/late")), "{line}");
    assert!(wait_until(5, || class_of(&ns, &cg, "late").as_deref() == Some("0x43475401")));

    // A socket whose SO_MARK is the tproxy's mark: reported at a reload.
    let marked = Proc::spawn(&format!(
        "sh -c 'echo $$ > {}/cgroup.procs && exec {} python3 -c \"import socket,time; s=socket.socket(2,2); s.setsockopt(1,36,3000); s.bind((\\\"127.0.0.1\\\",0)); print(\\\"READY\\\",flush=True); time.sleep(60)\"'",
        cg.dir.join("app").display(),
        ns.enter()
    ));
    marked.wait_for("READY", 10);
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for("carry mark 0xbb8", 10);
    assert!(line.contains(&format!("sockets in cgroup {rel}/app carry mark 0xbb8, the mark of tproxy px")), "{line}");
    drop(marked);
    drop(proxy);
    assert!(daemon.stop().success());
    assert_clean(&ns);
}
