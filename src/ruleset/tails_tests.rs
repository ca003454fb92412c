//! Conditional rules: tails, binding, publishing, the rendered ruleset.

use super::tests::golden;
use super::*;
use crate::cgroup::Cgroup;
use crate::config::Config;
use crate::names::*;

fn cg(path: &str, id: u64) -> Cgroup {
    Cgroup { path: path.into(), id, level: crate::cgroup::level_of(path) }
}

const QUIC: &str = "version: 1\n\
    tproxies: {mihomo: {mark: 3000, port: 7893}}\n\
    rules:\n  \
    - {match: '^/app/ff', protocol: udp, port: 443, reject: true}\n  \
    - {match: '^/app/ff', tproxy: mihomo, nft-set: inet:filter:browsers}\n  \
    - {match: '^/app/v6less$', family: ipv6, drop: true, nft-set: inet:filter:nov6}\n  \
    - {match: '^/app/v6less$', direct: true}\n  \
    - {match: '^/app/cond-only$', protocol: tcp, direct: true}\n  \
    - {match: '^/app', tproxy: mihomo}\n";

fn tree() -> Vec<Cgroup> {
    vec![
        cg("/app", 1),
        cg("/app/ff", 2),
        cg("/app/ff/tab", 3),
        cg("/app/ff2", 4),
        cg("/app/v6less", 5),
        cg("/app/cond-only", 6),
        cg("/other", 7),
    ]
}

#[test]
fn conditions_ruleset_golden() {
    let cfg = Config::parse(QUIC, "quic.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &tree());
    golden("conditions.nft", &rs.render(&tree()));
}

#[test]
fn cgroups_with_the_same_tail_share_one_chain() {
    let cfg = Config::parse(QUIC, "quic.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &tree());
    let class = |id: u64| rs.elements[&id].verdict;
    assert_eq!(class(1), Verdict::Tproxy(3000), "an unconditional first rule: as today");
    assert!(matches!(class(2), Verdict::Tail(_)));
    assert_eq!(class(2), class(3), "ff/tab matches the same rules");
    assert_eq!(class(2), class(4));
    assert_eq!(rs.tails.list.len(), 3, "{:?}", rs.tails.list);
    assert_eq!(rs.tails.rules_of(class(2)).unwrap(), [0, 1]);
    assert_eq!(rs.tails.rules_of(class(5)).unwrap(), [2, 3]);
    // Only tcp direct, then the `^/app` rule: the tail goes on to later rules.
    assert_eq!(rs.tails.rules_of(class(6)).unwrap(), [4, 5]);
    assert!(!rs.elements.contains_key(&7));
    // The chain of a tail: conditions in order, then the unconditional verdict.
    let chains = rs.chains();
    let t = chains.iter().find(|c| c.name == tail_chain(0)).unwrap();
    let text: Vec<String> = t.rules.iter().map(ToString::to_string).collect();
    assert_eq!(text, ["udp dport 443 meta mark set 0x43475403 return", "meta mark set 0x00000bb8"]);
    // Every level dispatches tails before the flow cache stores a class.
    assert_eq!(
        rs.level_rules(2),
        [Stmt::ClassifyLevel { level: 2 }, Stmt::MarkVmap { map: MAP_TAILS }, Stmt::Decided { cache: true }]
    );
    let e = rs.tails.describe(&cfg, class(2)).unwrap();
    assert_eq!(e, "udp dport 443 → reject (rule 0); everything else → tproxy mihomo (rule 1)");
}

#[test]
fn a_tail_without_an_unconditional_rule_falls_to_the_parent() {
    let cfg = Config::parse(
        "version: 1\nrules:\n  - {match: '^/a$', drop: true, protocol: icmp}\n  \
         - {match: '^/a/b$', protocol: udp, direct: true}\n",
        "t.yaml",
    )
    .unwrap();
    let rs = Ruleset::build(&cfg, &[cg("/a", 1), cg("/a/b", 2)]);
    let tail = |id: u64| rs.tails.rules_of(rs.elements[&id].verdict).unwrap().to_vec();
    assert_eq!(tail(1), [0]);
    // /a's conditional drop binds its child: first in the child's tail.
    assert_eq!(tail(2), [0, 1]);
    let t1 = rs.chains().into_iter().find(|c| c.name == tail_chain(1)).unwrap();
    assert_eq!(t1.rules.last(), Some(&Stmt::TailEnd { class: 0 }), "no rule took it: the next level decides");
    assert!(rs.tails.describe(&cfg, rs.elements[&1].verdict).unwrap().contains("its parent's verdict, else direct"));
}

#[test]
fn a_conditional_drop_binds_the_children_whatever_their_rules() {
    let cfg = Config::parse(
        "version: 1\nrules:\n  - {match: '^/a$', family: ipv6, reject: true}\n  - {match: '^/a$', drop: true}\n  \
         - {match: '^/b$', family: ipv6, reject: true}\n  - {match: '^/b$', direct: true}\n  \
         - {match: '/c$', direct: true}\n",
        "t.yaml",
    )
    .unwrap();
    let rs = Ruleset::build(&cfg, &[cg("/a", 1), cg("/a/c", 2), cg("/b", 3), cg("/b/c", 4)]);
    // /a refuses everything its conditions do not take: /a/c is /a.
    assert_eq!(rs.elements[&2].verdict, rs.elements[&1].verdict);
    // /b rejects IPv6 only: /b/c keeps that reject before its own direct.
    assert_eq!(rs.tails.rules_of(rs.elements[&4].verdict).unwrap(), [2, 4]);
    assert!(rs.tails.binds(rs.elements[&3].verdict) && !rs.tails.proxies(rs.elements[&3].verdict));
}

#[test]
fn configs_without_conditions_have_no_tails() {
    let cfg = Config::parse("version: 1\nrules:\n  - {match: '^/a', drop: true}\n", "t.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &[cg("/a", 1)]);
    assert!(!rs.tails.active());
    assert!(!rs.render(&[cg("/a", 1)]).contains("tail"));
    assert_eq!(rs.level_rules(1).len(), 2);
}

#[test]
fn a_tail_publishes_every_rule_of_it_that_names_a_set() {
    let cfg = Config::parse(QUIC, "quic.yaml").unwrap();
    let rs = Ruleset::build(&cfg, &tree());
    let p = publish::published(&cfg, &rs.elements, &rs.tails);
    let get = |s: &str| p.iter().find(|(k, _)| k.to_string() == s).unwrap().1.clone();
    assert_eq!(get("inet:filter:browsers"), [2, 3, 4].into());
    assert_eq!(get("inet:filter:nov6"), [5].into());
}

#[test]
fn tail_classes_read_back_as_tails() {
    assert_eq!(Verdict::from_class(TAIL_BASE + 7), Verdict::Tail(TAIL_BASE + 7));
    assert_eq!(Verdict::Tail(TAIL_BASE).class(), TAIL_BASE);
}

/// `path_view` (what `explain` and `status` print) says of every cgroup
/// exactly the rules the build gives it, through conditional and
/// unconditional binders at any depth, with and without conditional rules
/// in the config.
#[test]
fn the_path_view_agrees_with_the_build() {
    const BINDERS: &str = "version: 1\n\
        tproxies: {px: {mark: 3000, port: 7893}}\n\
        rules:\n  \
        - {match: '^/q$', protocol: udp, port: 443, reject: true}\n  \
        - {match: '^/q(/|$)', tproxy: px}\n  \
        - {match: '^/q/r$', family: ipv6, drop: true}\n  \
        - {match: 'w$', protocol: tcp, direct: true}\n  \
        - {match: 'w$', drop: true}\n  \
        - {match: '^/d$', drop: true}\n  \
        - {match: 'x$', direct: true}\n  \
        - {match: 'y$', protocol: icmp, direct: true}\n";
    const PLAIN: &str = "version: 1\n\
        rules:\n  \
        - {match: '^/d$', drop: true}\n  \
        - {match: '^/d/x/e$', reject: true}\n  \
        - {match: 'x$', direct: true}\n";
    let paths = [
        "/q", "/q/x", "/q/r", "/q/r/x", "/q/r/x/y", "/q/w", "/q/w/x", "/q/w/x/y", "/q/n", "/q/n/x", "/d", "/d/x",
        "/d/x/e", "/d/x/y", "/w", "/w/x", "/n", "/n/x", "/n/y",
    ];
    let tree: Vec<Cgroup> = paths.iter().enumerate().map(|(i, p)| cg(p, i as u64 + 1)).collect();
    for text in [BINDERS, PLAIN] {
        let cfg = Config::parse(text, "t.yaml").unwrap();
        let rs = Ruleset::build(&cfg, &tree);
        for c in &tree {
            let view = path_view::view(&cfg, &c.path);
            let said: Vec<u32> = view.rules.iter().map(|r| r.index as u32).collect();
            let built: Vec<u32> = match rs.elements.get(&c.id) {
                None => Vec::new(),
                Some(e) => match rs.tails.rules_of(e.verdict) {
                    Some(t) => t.to_vec(),
                    None => e.rule.into_iter().collect(),
                },
            };
            assert_eq!(said, built, "{} under {text}", c.path);
        }
    }
    let cfg = Config::parse(BINDERS, "t.yaml").unwrap();
    // Below /q, its UDP 443 reject comes first; below /w (tcp direct,
    // else drop) everything goes as /w's does.
    let v = path_view::view(&cfg, "/q/n/x");
    assert_eq!((v.whole, v.inherited.iter().map(|(e, r)| (*e, r.index)).collect::<Vec<_>>()), (None, vec![(2, 0)]));
    assert_eq!(path_view::view(&cfg, "/w/x").whole, Some(2));
    assert_eq!(path_view::view(&cfg, "/w/x").rules.iter().map(|r| r.index).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(path_view::view(&cfg, "/d/x/e").whole, Some(2));
}
