//! Classification published to the user's own set (`nft-set` on a rule),
//! against the kernel: the set's elements follow cgroups appearing and
//! disappearing, the user's own rule using the set drops traffic, a table
//! reloaded by the user gets its elements back, and a missing set is said
//! in `status` and filled once it is created. The user's table is never
//! created, flushed or deleted by cgtproxy.

mod common;
use common::*;

/// The user's table: a cgroupsv2 set and a rule dropping UDP to port 9999
/// from its cgroups at the test subtree's level + 1.
fn user_table(level: u32) -> String {
    format!(
        "table inet filter {{\n  set browsers {{ type cgroupsv2; }}\n  chain out {{\n    type filter hook output \
         priority 0; policy accept;\n    socket cgroupv2 level {level} @browsers udp dport 9999 drop\n  }}\n}}\n"
    )
}

/// The test subtree's cgroups (by name below it) in the user's set, as `nft` lists them.
fn members(bed: &Testbed, cg: &TestCgroups) -> Vec<String> {
    let (ok, text) = bed.local.try_sh("nft list set inet filter browsers");
    if !ok {
        return vec![format!("(no set: {text})")];
    }
    let prefix = format!("{}/", cg.rel.trim_start_matches('/'));
    let mut found: Vec<String> = text
        .split(['{', ',', '}', '\n', '"'])
        // nft prints paths below /sys/fs/cgroup: `unified/...` on a hybrid host.
        .filter_map(|item| item.trim().split_once(&prefix).map(|(_, sub)| sub.to_owned()))
        .collect();
    found.sort();
    found
}

#[test]
fn a_rules_cgroups_are_published_to_the_users_set() {
    if !root("a_rules_cgroups_are_published_to_the_users_set") {
        return;
    }
    let bed = Testbed::new("pub");
    let cg = TestCgroups::new("pub");
    cg.mkdir("browser-1");
    cg.mkdir("other");
    let level = cgtproxy::cgroup::level_of(&cg.rel) + 1;
    let table = TempFile(std::env::temp_dir().join(format!("cgtproxy-test-{}-user.nft", std::process::id())));
    std::fs::write(&*table, user_table(level)).unwrap();
    bed.local.sh(&format!("nft -f {}", table.display()));
    let rel = &cg.rel;
    let config = format!(
        "version: 1\nrules:\n  - {{match: '^{rel}/browser-[0-9]+$', direct: true, nft-set: inet:filter:browsers}}\n  \
         - {{match: '^{rel}/', direct: true}}\n"
    );
    let (daemon, cfg) = start_daemon(&bed.local, &config);
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-1"]), "{:?}", members(&bed, &cg));

    // The user's own rule drops the browser's UDP to 9999; others pass.
    let before = bed.packets_at_9999();
    let dropped = bed.client(&cg.dir.join("browser-1"), "udp", REMOTE4, 9999, "b");
    assert!(dropped.contains("TIMEOUT") || dropped.contains("ERROR"), "{dropped}");
    assert_eq!(bed.packets_at_9999(), before, "a packet of the published cgroup passed the user's drop rule");
    assert_eq!(bed.client(&cg.dir.join("other"), "udp", REMOTE4, 9999, "o"), "REMOTE o");
    assert!(bed.packets_at_9999() > before, "the unpublished cgroup's datagram did not arrive");

    // Cgroups appearing and disappearing.
    cg.mkdir("browser-2");
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-1", "browser-2"]), "{:?}", members(&bed, &cg));
    std::fs::remove_dir(cg.dir.join("browser-1")).unwrap();
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-2"]), "{:?}", members(&bed, &cg));

    // The user reloads their table (delete and load again): filled again.
    bed.local.sh(&format!("nft delete table inet filter && nft -f {}", table.display()));
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-2"]), "after a reload: {:?}", members(&bed, &cg));
    // The user flushes the set: filled again.
    bed.local.sh("nft flush set inet filter browsers");
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-2"]), "after a flush: {:?}", members(&bed, &cg));

    // A missing set is said in status, and filled when it appears.
    bed.local.sh("nft delete table inet filter");
    let state = cfg.with_extension("state.json");
    let status = || bed.local.sh(&format!("CGTPROXY_STATE={} {} -c {} status", state.display(), bin(), cfg.display()));
    assert!(
        wait_until(5, || status().contains("inet:filter:browsers: MISSING")),
        "status does not say the set is missing:\n{}",
        status()
    );
    bed.local.sh(&format!("nft -f {}", table.display()));
    assert!(wait_until(5, || members(&bed, &cg) == ["browser-2"]), "after re-creation: {:?}", members(&bed, &cg));
    assert!(wait_until(5, || status().contains("inet:filter:browsers: 1 cgroups")), "{}", status());
    assert!(daemon.output().contains("published set inet:filter:browsers: MISSING"), "{}", daemon.output());
    drop(daemon);
    // cgtproxy never deletes the user's table.
    assert!(bed.local.try_sh("nft list table inet filter").0, "the user's table is gone after the daemon stopped");
}

#[test]
fn a_set_of_the_wrong_type_is_refused_and_said() {
    if !root("a_set_of_the_wrong_type_is_refused_and_said") {
        return;
    }
    let Sandbox { ns, cg } = Sandbox::new("pubtype");
    cg.mkdir("browser");
    ns.sh("nft 'add table ip mine; add set ip mine browsers { type ipv4_addr; }'");
    let rel = &cg.rel;
    let config =
        format!("version: 1\nrules:\n  - {{match: '^{rel}/browser$', direct: true, nft-set: ip:mine:browsers}}\n");
    let (daemon, _cfg) = start_daemon(&ns, &config);
    assert!(
        wait_until(5, || daemon.output().contains("published set ip:mine:browsers: WRONG TYPE")),
        "{}",
        daemon.output()
    );
    assert!(!ns.sh("nft list set ip mine browsers").contains("elements"), "an element went into a set of another type");
}
