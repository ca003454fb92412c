//! An independent reading of our hand-encoded batches: the
//! `netlink-packet-netfilter` crate (a dev-dependency only) decodes every
//! message `encode::full` produces, so a wrong attribute number or type is
//! caught without `nft` or root. Its unknown-attribute variant (`Other`)
//! at the top level of a table, chain, set, element list or rule means
//! we sent an attribute the kernel would read as something else.

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, Parseable};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, NfTablesMessage, RuleAttribute, SetAttribute, SetElementList, TableAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use super::batch::Batch;
use super::encode;
use crate::config::Config;
use crate::ruleset::Ruleset;

fn batch_for(yaml: &str) -> (Ruleset, Vec<u8>) {
    let cfg = Config::parse(yaml, "<test>").unwrap();
    let cgroups = [crate::cgroup::Cgroup { path: "/user.slice/app".into(), id: 42, level: 2 }];
    let rs = Ruleset::build(&cfg, &cgroups);
    let mut b = Batch::new(100);
    encode::full(&mut b, &rs);
    let (buf, _, _) = b.finish();
    (rs, buf)
}

#[test]
fn a_full_batch_decodes_with_the_netlink_packet_netfilter_crate() {
    let (rs, buf) = batch_for(
        "version: 1\nbypass: [127.0.0.0/8, '::1']\ntproxies:\n  px: {mark: 3000, port: 7893, dns-hijack: {}}\nrules:\n  - {match: '^/user.slice/app', tproxy: px}\n",
    );
    let (mut tables, mut chains, mut sets, mut rules, mut elements, mut control) = (0, 0, 0, 0, 0, 0);
    let mut off = 0;
    while off < buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let raw = &buf[off..off + len];
        off += len;
        let msg = NetlinkMessage::<NetfilterMessage>::parse(&NetlinkBuffer::new(&raw))
            .unwrap_or_else(|e| panic!("message at {off} does not decode: {e:?}"));
        let NetlinkPayload::InnerMessage(NetfilterMessage { inner, .. }) = msg.payload else {
            panic!("not a netfilter message: {msg:?}");
        };
        match inner {
            NetfilterMessageInner::None(_) => control += 1,
            NetfilterMessageInner::NfTables(m) => match m {
                NfTablesMessage::NewTable(t) | NfTablesMessage::DeleteTable(t) => {
                    tables += 1;
                    assert!(t.attributes.contains(&TableAttribute::Name("cgtproxy".into())), "{t:?}");
                    assert!(!t.attributes.iter().any(|a| matches!(a, TableAttribute::Other(_))), "{t:?}");
                }
                NfTablesMessage::NewChain(c) => {
                    chains += 1;
                    assert!(c.attributes.contains(&ChainAttribute::Table("cgtproxy".into())), "{c:?}");
                    assert!(c.attributes.iter().any(|a| matches!(a, ChainAttribute::Name(_))), "{c:?}");
                    assert!(!c.attributes.iter().any(|a| matches!(a, ChainAttribute::Other(_))), "{c:?}");
                }
                NfTablesMessage::NewSet(s) => {
                    sets += 1;
                    assert!(s.attributes.contains(&SetAttribute::Table("cgtproxy".into())), "{s:?}");
                    let key_len = s.attributes.iter().find_map(|a| match a {
                        SetAttribute::KeyLen(l) => Some(*l),
                        _ => None,
                    });
                    assert!(matches!(key_len, Some(1 | 4 | 8 | 16)), "{s:?}");
                    assert!(!s.attributes.iter().any(|a| matches!(a, SetAttribute::Other(_))), "{s:?}");
                }
                NfTablesMessage::NewSetElement(e) => {
                    elements += 1;
                    assert!(e.attributes.contains(&SetElementList::Table("cgtproxy".into())), "{e:?}");
                    assert!(e.attributes.iter().any(|a| matches!(a, SetElementList::Elements(_))), "{e:?}");
                    assert!(!e.attributes.iter().any(|a| matches!(a, SetElementList::Other(_))), "{e:?}");
                }
                NfTablesMessage::NewRule(r) => {
                    rules += 1;
                    assert!(r.attributes.contains(&RuleAttribute::Table("cgtproxy".into())), "{r:?}");
                    assert!(r.attributes.iter().any(|a| matches!(a, RuleAttribute::Expressions(_))), "{r:?}");
                    assert!(!r.attributes.iter().any(|a| matches!(a, RuleAttribute::Other(_))), "{r:?}");
                }
                other => panic!("unexpected message in a full batch: {other:?}"),
            },
            other => panic!("not nf_tables: {other:?}"),
        }
    }
    let chains_want = rs.chains();
    assert_eq!(control, 2, "BEGIN and END");
    assert_eq!(tables, 3, "add, delete, add table");
    assert_eq!(chains, chains_want.len());
    assert_eq!(rules, chains_want.iter().map(|c| c.rules.len()).sum::<usize>());
    assert!(sets >= 5, "5 named sets and maps, plus anonymous ones: {sets}");
    assert!(elements >= 3, "bypass, bypass6, cgroup-class, mark maps: {elements}");
}
