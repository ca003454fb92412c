//! Named destination sets (`sets:`), against the kernel: a destination
//! another program puts into a dynamic set in `bypass` goes direct while
//! the rest of a proxied app's traffic is proxied; the elements survive
//! self-heal and reload; an element's timeout ends it; a real dnsmasq with
//! `nftset=` fills the set from its DNS answers.

mod common;
use common::*;

fn config(rel: &str) -> String {
    format!(
        "version: 1\nsets:\n  static-net: [203.0.113.0/24]\n  resolved: {{dynamic: true}}\n\
         bypass: [192.0.2.0/24, '@static-net', '@resolved']\n\
         tproxies:\n  px: {{mark: 3000, port: 7893}}\nrules:\n  - {{match: '^{rel}/proxy', tproxy: px}}\n"
    )
}

#[test]
fn destinations_in_a_dynamic_set_go_direct_and_stay_through_heal_and_reload() {
    if !root("destinations_in_a_dynamic_set_go_direct_and_stay_through_heal_and_reload") {
        return;
    }
    let bed = Testbed::new("sets");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("sets");
    let app = cg.mkdir("proxy");
    let (daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));
    let proxied = format!("TPROXY 7893 {REMOTE4}:8080");
    let get = |proto: &str| bed.client(&app, proto, REMOTE4, 8080, "t");
    assert_eq!(get("tcp"), proxied);

    // Another program adds the destination: it goes direct.
    bed.local.sh(&format!("nft add element inet cgtproxy resolved {{ {REMOTE4} }}"));
    assert_eq!(get("tcp"), "REMOTE t");
    assert_eq!(get("udp"), "REMOTE t");
    assert!(!daemon.output().contains("changed by another program"), "adding an element is not an outside change");

    // An outside change to the table is healed; the element stays.
    bed.local.sh("nft add chain inet cgtproxy intruder");
    assert!(wait_until(5, || daemon.output().contains("restored table inet cgtproxy")), "{}", daemon.output());
    assert!(wait_until(5, || !bed.local.sh("nft list table inet cgtproxy").contains("intruder")));
    assert!(bed.local.sh("nft list set inet cgtproxy resolved").contains(REMOTE4), "the element was lost in a heal");
    assert_eq!(get("tcp"), "REMOTE t");

    // A reload keeps it.
    daemon.signal(libc::SIGHUP);
    assert!(wait_until(5, || daemon.output().contains("reloaded")), "{}", daemon.output());
    assert!(bed.local.sh("nft list set inet cgtproxy resolved").contains(REMOTE4), "the element was lost in a reload");
    assert_eq!(get("tcp"), "REMOTE t");

    // A timeout ends it, and a heal puts it back with what was left of it.
    bed.local.sh(&format!("nft delete element inet cgtproxy resolved {{ {REMOTE4} }}"));
    bed.local.sh(&format!("nft add element inet cgtproxy resolved {{ {REMOTE4} timeout 3s }}"));
    bed.local.sh("nft add chain inet cgtproxy intruder2");
    assert!(wait_until(5, || !bed.local.sh("nft list table inet cgtproxy").contains("intruder2")));
    let listed = bed.local.sh("nft list set inet cgtproxy resolved");
    assert!(listed.contains(REMOTE4) && listed.contains("expires"), "{listed}");
    assert_eq!(get("tcp"), "REMOTE t");
    assert!(wait_until(6, || get("tcp") == proxied), "the element did not expire");

    // A static set in bypass is merged into the bypass set.
    assert!(bed.local.sh("nft list set inet cgtproxy bypass").contains("203.0.113.0/24"));
}

#[test]
fn dnsmasq_fills_a_dynamic_set_from_its_answers() {
    if !root("dnsmasq_fills_a_dynamic_set_from_its_answers") {
        return;
    }
    if !try_sh("command -v dnsmasq").0 {
        eprintln!("skipping dnsmasq_fills_a_dynamic_set_from_its_answers: no dnsmasq (apt-get install dnsmasq-base)");
        return;
    }
    let bed = Testbed::new("setsdns");
    let tproxy = Proc::spawn(&format!("{} {} tproxy 7893", bed.local.enter(), helper()));
    tproxy.wait_for("READY", 10);
    let cg = TestCgroups::new("setsdns");
    let app = cg.mkdir("proxy");
    let (_daemon, _cfg) = start_daemon(&bed.local, &config(&cg.rel));
    // An "upstream" answering for example.test, and the resolver in front
    // of it that puts the answers into the set (nftset= works on answers it
    // forwards).
    let dnsmasq = |args: String| {
        Proc::spawn(&format!(
            "{} dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --user=root --pid-file= {args}",
            bed.local.enter()
        ))
    };
    let _upstream = dnsmasq(format!("--listen-address=127.0.0.2 --port=5300 --address=/example.test/{REMOTE4}"));
    let _front = dnsmasq(
        "--listen-address=127.0.0.3 --port=53 --server=127.0.0.2#5300 --nftset=/example.test/4#inet#cgtproxy#resolved"
            .into(),
    );
    assert!(
        wait_until(5, || bed.local.try_sh(&format!("{} dnsq 127.0.0.3 53 example.test", helper())).1.contains(REMOTE4)),
        "dnsmasq did not answer"
    );
    assert!(
        wait_until(3, || bed.local.sh("nft list set inet cgtproxy resolved").contains(REMOTE4)),
        "dnsmasq did not add the answer to the set: {}",
        bed.local.sh("nft list set inet cgtproxy resolved")
    );
    assert_eq!(bed.client(&app, "tcp", REMOTE4, 8080, "t"), "REMOTE t");
}
