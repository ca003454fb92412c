//! The desired [`Ruleset`] as nf_tables netlink messages.

use crate::names::{
    CHAIN_CLASSIFY, CHAIN_DNS, CLASS_DROP, CLASS_REJECT, MAP_CGROUP, MAP_MARK, MAP_MARK_DNS, SET_BYPASS4, SET_BYPASS6,
    TABLE,
};
use crate::netlink::{MsgWriter, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use crate::ruleset::stmt::{GwMatch, GwVerdict, Only};
use crate::ruleset::{Chain, Element, Interval, Ruleset, Stmt};

use super::batch::Batch;
use super::expr::{Data, Expr, encode_data, meta_eq, verdict};
use super::sys::*;

/// Keep each element list under the 64 KiB limit of a netlink attribute.
const ELEMENTS_BYTES: usize = 60_000;

/// Set ids of the named sets created in this batch, so rules can refer to
/// them before the commit gives them handles.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetIds {
    pub bypass4: Option<u32>,
    pub bypass6: Option<u32>,
    pub cgroup: Option<u32>,
    pub mark: Option<u32>,
    pub mark_dns: Option<u32>,
}

impl SetIds {
    fn of(&self, name: &str) -> Option<u32> {
        match name {
            SET_BYPASS4 => self.bypass4,
            SET_BYPASS6 => self.bypass6,
            MAP_CGROUP => self.cgroup,
            MAP_MARK => self.mark,
            MAP_MARK_DNS => self.mark_dns,
            _ => None,
        }
    }
}

/// The whole table, replacing any table of that name (a stale one from a
/// killed instance included), in one transaction.
pub fn full(b: &mut Batch, rs: &Ruleset) {
    // add table inet cgtproxy; delete table inet cgtproxy; add table ...:
    // the first add makes the delete valid whether or not a table exists.
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add table inet cgtproxy");
    table(b, NFT_MSG_DELTABLE, 0, "delete table inet cgtproxy");
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, "add table inet cgtproxy");

    let ids = SetIds {
        bypass4: Some(set(b, SET_BYPASS4, NFT_SET_INTERVAL, TYPE_IPADDR, 4, SetData::None)),
        bypass6: Some(set(b, SET_BYPASS6, NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, SetData::None)),
        cgroup: Some(set(
            b,
            MAP_CGROUP,
            if rs.counters { NFT_SET_MAP | NFT_SET_EXPR } else { NFT_SET_MAP },
            TYPE_CGROUPV2,
            8,
            if rs.counters { SetData::CountedMark } else { SetData::Mark },
        )),
        mark: Some(set(b, MAP_MARK, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict)),
        mark_dns: Some(set(b, MAP_MARK_DNS, NFT_SET_MAP, TYPE_MARK, 4, SetData::Verdict)),
    };
    interval_elements(b, SET_BYPASS4, ids.bypass4, &rs.bypass4, 4);
    interval_elements(b, SET_BYPASS6, ids.bypass6, &rs.bypass6, 16);

    let chains = rs.chains();
    // Chains first: map elements and rules may goto any of them.
    for c in &chains {
        chain(b, c);
    }
    for c in &chains {
        for s in &c.rules {
            rule(b, &c.name, s, &ids, None);
        }
    }
    let marks: Vec<Elem> = rs
        .tproxies
        .iter()
        .map(|t| {
            Elem::Mapping(
                t.mark.to_ne_bytes().to_vec(),
                Data::Verdict(NFT_GOTO, Some(crate::names::tproxy_chain(&t.name).into())),
            )
        })
        .collect();
    elements(b, MAP_MARK, ids.mark, true, marks);
    let dns: Vec<_> = rs
        .tproxies
        .iter()
        .filter(|t| t.dns_hijack.is_some())
        .map(|t| {
            let goto = Data::Verdict(NFT_GOTO, Some(crate::names::dns_chain(&t.name).into()));
            Elem::Mapping(t.mark.to_ne_bytes().to_vec(), goto)
        })
        .collect();
    elements(b, MAP_MARK_DNS, ids.mark_dns, true, dns);
    cgroup_elements(b, rs.elements.iter(), ids.cgroup);
    bridge_table(b, rs);
}

/// `table bridge cgtproxy` (gateway brouting), replacing a stale one, in the
/// same batch as the inet table. Nothing when no gateway entry needs it.
pub fn bridge_table(b: &mut Batch, rs: &Ruleset) {
    let chains = rs.bridge_chains();
    if chains.is_empty() {
        return;
    }
    let family = std::mem::replace(&mut b.family, NFPROTO_BRIDGE);
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add table bridge cgtproxy");
    table(b, NFT_MSG_DELTABLE, 0, "delete table bridge cgtproxy");
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, "add table bridge cgtproxy");
    let ids = SetIds {
        bypass4: Some(set(b, SET_BYPASS4, NFT_SET_INTERVAL, TYPE_IPADDR, 4, SetData::None)),
        bypass6: Some(set(b, SET_BYPASS6, NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, SetData::None)),
        ..SetIds::default()
    };
    interval_elements(b, SET_BYPASS4, ids.bypass4, &rs.bypass4, 4);
    interval_elements(b, SET_BYPASS6, ids.bypass6, &rs.bypass6, 16);
    for c in &chains {
        chain(b, c);
    }
    for c in &chains {
        for s in &c.rules {
            rule(b, &c.name, s, &ids, None);
        }
    }
    b.family = family;
}

/// A bridge table with one brouting rule, for [`super::Nft::can_broute`]:
/// `meta ibrname "x*" meta mark set 1 meta broute set 1`, in a prerouting
/// chain (`hooked`, so the kernel validates the hook too) or in a chain no
/// packet reaches (a probe table that must outlive a batch).
pub fn probe_broute(b: &mut Batch, hooked: bool) {
    table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add scratch bridge table");
    let c = Chain {
        name: "probe".into(),
        hook: hooked.then_some(crate::ruleset::Hook {
            kind: "filter",
            hook: "prerouting",
            priority: crate::ruleset::PRIO_BRIDGE_FILTER,
            priority_name: "filter",
        }),
        rules: Vec::new(),
    };
    chain(b, &c);
    let m = GwMatch { iface: Some(crate::config::Iface::Prefix("x".into())), source: None };
    let mut e = gw_match(b, &m, true);
    e.extend(exprs(b, &Stmt::Broute { mark: 1 }, &SetIds::default()));
    let msg = b.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, "add rule bridge (probe) meta broute set 1");
    let t = b.table.clone();
    b.w.str(NFTA_RULE_TABLE, &t);
    b.w.str(NFTA_RULE_CHAIN, "probe");
    let list = b.w.nest(NFTA_RULE_EXPRESSIONS);
    for x in &e {
        x.encode(&mut b.w);
    }
    b.w.nest_end(list);
    b.end(msg);
}

/// The word `nft` uses for a batch's family, for messages.
fn family_word(b: &Batch) -> &'static str {
    if b.family == NFPROTO_BRIDGE { "bridge" } else { "inet" }
}

/// `add|delete table inet cgtproxy`
pub fn table(b: &mut Batch, msg: u16, flags: u16, what: &str) {
    let m = b.begin(msg, flags, what);
    let t = b.table.clone();
    b.w.str(NFTA_TABLE_NAME, &t);
    b.end(m);
}

/// `add set|map inet cgtproxy NAME { type KEY [: verdict]; flags ...; }`
/// Returns the set id.
/// What a set maps its keys to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetData {
    /// A plain set.
    None,
    /// A verdict map.
    Verdict,
    /// A data map to a mark-sized value (host order).
    Mark,
    /// Like `Mark`, with a packet/byte counter on every element.
    CountedMark,
}

fn set(b: &mut Batch, name: &str, flags: u32, key_type: u32, key_len: u32, data: SetData) -> u32 {
    let id = b.set_id();
    let what = format!("add {} {} {TABLE} {name}", if data == SetData::None { "set" } else { "map" }, family_word(b));
    let m = b.begin(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, what);
    let t = b.table.clone();
    b.w.str(NFTA_SET_TABLE, &t);
    b.w.str(NFTA_SET_NAME, name);
    b.w.u32be(NFTA_SET_FLAGS, flags);
    b.w.u32be(NFTA_SET_KEY_TYPE, key_type);
    b.w.u32be(NFTA_SET_KEY_LEN, key_len);
    match data {
        SetData::None => {}
        SetData::Verdict => {
            b.w.u32be(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            b.w.u32be(NFTA_SET_DATA_LEN, 0);
        }
        SetData::Mark | SetData::CountedMark => {
            b.w.u32be(NFTA_SET_DATA_TYPE, TYPE_MARK);
            b.w.u32be(NFTA_SET_DATA_LEN, 4);
        }
    }
    if data == SetData::CountedMark {
        // `counter` in the set: each element gets its own, updated when a
        // lookup finds it.
        let x = b.w.nest(NFTA_SET_EXPR);
        b.w.str(NFTA_EXPR_NAME, "counter");
        let d = b.w.nest(NFTA_EXPR_DATA);
        b.w.u64be(NFTA_COUNTER_BYTES, 0);
        b.w.u64be(NFTA_COUNTER_PACKETS, 0);
        b.w.nest_end(d);
        b.w.nest_end(x);
    }
    b.w.u32be(NFTA_SET_ID, id);
    // Only for `nft list`: how to print keys. Marks and cgroup ids are in
    // host order (as `meta mark` and `socket cgroupv2` load them), addresses
    // in network order. libnftnl's udata: u8 type, u8 length, value.
    let order =
        if key_type == TYPE_IPADDR || key_type == TYPE_IP6ADDR { BYTEORDER_BIG_ENDIAN } else { BYTEORDER_HOST_ENDIAN };
    let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
    udata.extend_from_slice(&order.to_ne_bytes());
    if matches!(data, SetData::Mark | SetData::CountedMark) {
        udata.extend_from_slice(&[NFTNL_UDATA_SET_DATABYTEORDER, 4]);
        udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
    }
    b.w.attr(NFTA_SET_USERDATA, &udata);
    b.end(m);
    id
}

/// `add chain inet cgtproxy NAME [{ type T hook H priority P; policy accept; }]`
fn chain(b: &mut Batch, c: &Chain) {
    let what = format!("add chain {} {TABLE} {}", family_word(b), c.name);
    let m = b.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, what);
    let t = b.table.clone();
    b.w.str(NFTA_CHAIN_TABLE, &t);
    b.w.str(NFTA_CHAIN_NAME, &c.name);
    if let Some(h) = c.hook {
        let n = b.w.nest(NFTA_CHAIN_HOOK);
        let hooknum = if h.hook == "prerouting" { NF_INET_PRE_ROUTING } else { NF_INET_LOCAL_OUT };
        b.w.u32be(NFTA_HOOK_HOOKNUM, hooknum);
        b.w.u32be(NFTA_HOOK_PRIORITY, h.priority as u32);
        b.w.nest_end(n);
        b.w.u32be(NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
        b.w.str(NFTA_CHAIN_TYPE, h.kind);
    }
    b.end(m);
}

/// An anonymous constant set `{ tcp, udp }` bound to the next rule.
/// Returns the lookup of the L4 protocol in it.
fn tcp_udp_lookup(b: &mut Batch, invert: bool) -> Expr {
    let id = b.set_id();
    let name = "__set%d";
    let m = b.begin(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, "add set { tcp, udp }");
    let t = b.table.clone();
    b.w.str(NFTA_SET_TABLE, &t);
    b.w.str(NFTA_SET_NAME, name);
    b.w.u32be(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
    b.w.u32be(NFTA_SET_KEY_TYPE, TYPE_INET_PROTOCOL);
    b.w.u32be(NFTA_SET_KEY_LEN, 1);
    b.w.u32be(NFTA_SET_ID, id);
    b.end(m);
    let m = b.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add element { tcp, udp }");
    let t = b.table.clone();
    b.w.str(NFTA_SET_ELEM_LIST_TABLE, &t);
    b.w.str(NFTA_SET_ELEM_LIST_SET, name);
    b.w.u32be(NFTA_SET_ELEM_LIST_SET_ID, id);
    let list = b.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for proto in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
        Elem::Key(vec![proto]).encode(&mut b.w);
    }
    b.w.nest_end(list);
    b.end(m);
    Expr::Lookup { set: name.into(), set_id: Some(id), sreg: NFT_REG_1, dreg: None, invert }
}

fn lookup(set: &str, ids: &SetIds, dreg: Option<u32>) -> Expr {
    Expr::Lookup { set: set.into(), set_id: ids.of(set), sreg: NFT_REG_1, dreg, invert: false }
}

/// The expressions of one statement. Statements that use an anonymous set
/// add it to the batch first.
pub fn exprs(b: &mut Batch, s: &Stmt, ids: &SetIds) -> Vec<Expr> {
    let mut e = Vec::new();
    let ipv4 = [NFPROTO_IPV4];
    match s {
        Stmt::CtReplyReturn => {
            e.push(Expr::Ct { key: NFT_CT_DIRECTION, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![IP_CT_DIR_REPLY] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::BypassReturn { v6 } => {
            let (proto, offset, len, set) =
                if *v6 { (NFPROTO_IPV6, 24, 16, SET_BYPASS6) } else { (NFPROTO_IPV4, 16, 4, SET_BYPASS4) };
            e.extend(meta_eq(NFT_META_NFPROTO, &[proto]));
            e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
            e.push(lookup(set, ids, None));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::NotTcpUdpReturn => {
            let l = tcp_udp_lookup(b, true);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::MarkedReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::JumpClassify => {
            e.push(verdict(NFT_JUMP, Some(CHAIN_CLASSIFY)));
        }
        Stmt::JumpDns => {
            // [ meta load l4proto => reg 1 ] [ lookup reg 1 set __set%d ]
            // [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00003500 ]
            // [ immediate reg 0 jump -> dns-hijack ]
            let l = tcp_udp_lookup(b, false);
            e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            e.push(l);
            e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
            e.push(verdict(NFT_JUMP, Some(CHAIN_DNS)));
        }
        Stmt::DnsKeep { mark, l4, v6 } => {
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            e.extend(meta_eq(NFT_META_L4PROTO, &[l4.proto()]));
            e.push(verdict(NF_ACCEPT, None));
        }
        Stmt::ResetMark => {
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![0; 4]) });
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::ClassifyLevel { level } => {
            e.extend(unclassified_socket_lookup(*level, ids, Some(NFT_REG_1), false));
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::UnknownCgroupDrop { level } => {
            e.extend(unclassified_socket_lookup(*level, ids, None, true));
            e.push(verdict(NF_DROP, None));
        }
        Stmt::Unmark { mark, only } => {
            e.extend(meta_eq(NFT_META_MARK, &mark.to_ne_bytes()));
            match only {
                None => {}
                Some(Only::Udp { keep_dns: true }) => {
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                    e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
                }
                Some(Only::Udp { keep_dns: false }) => {
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                }
                Some(Only::Udp6) => {
                    e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6]));
                    e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
                }
                Some(Only::Ipv6) => e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6])),
            }
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![0; 4]) });
            e.push(Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 });
        }
        Stmt::DropClass => {
            e.extend(meta_eq(NFT_META_MARK, &CLASS_DROP.to_ne_bytes()));
            e.push(verdict(NF_DROP, None));
        }
        Stmt::RejectClass { tcp } => {
            e.extend(meta_eq(NFT_META_MARK, &CLASS_REJECT.to_ne_bytes()));
            if *tcp {
                // `meta l4proto tcp reject with tcp reset`: [ reject type 1 code 0 ]
                e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
                e.push(Expr::Reject { ty: NFT_REJECT_TCP_RST, code: 0 });
            } else {
                // `reject` in an inet table: [ reject type 2 code 1 ]
                // (icmpx port-unreachable: ICMP or ICMPv6 as the packet is).
                e.push(Expr::Reject { ty: NFT_REJECT_ICMPX_UNREACH, code: NFT_REJECT_ICMPX_PORT_UNREACH });
            }
        }
        Stmt::MarkVmap { map } => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(lookup(map, ids, Some(NFT_REG_VERDICT)));
        }
        Stmt::CtDnatReturn => {
            e.extend(ct_bits_set(NFT_CT_STATUS, IPS_DST_NAT));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::Tproxy { port, ipv4_only, tcp_only } => {
            if *ipv4_only {
                e.extend(meta_eq(NFT_META_NFPROTO, &ipv4));
            }
            if *tcp_only {
                e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
            } else {
                let l = tcp_udp_lookup(b, false);
                e.push(Expr::MetaLoad { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
                e.push(l);
            }
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(port.to_be_bytes().to_vec()) });
            let family = if *ipv4_only { NFPROTO_IPV4 } else { NFPROTO_UNSPEC };
            e.push(Expr::Tproxy { family, reg_port: NFT_REG_1 });
        }
        Stmt::DnsDnat { l4, ip, port } => {
            let (nfproto, addr) = match ip {
                std::net::IpAddr::V4(a) => (NFPROTO_IPV4, a.octets().to_vec()),
                std::net::IpAddr::V6(a) => (NFPROTO_IPV6, a.octets().to_vec()),
            };
            e.extend(meta_eq(NFT_META_NFPROTO, &[nfproto]));
            e.extend(dport_53(l4.proto()));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(addr) });
            e.push(Expr::Immediate { dreg: NFT_REG_2, data: Data::Value(port.to_be_bytes().to_vec()) });
            e.push(Expr::Dnat { family: nfproto, reg_addr: NFT_REG_1, reg_proto: NFT_REG_2 });
        }
        Stmt::JumpGateway => e.push(verdict(NFT_JUMP, Some(crate::names::CHAIN_GATEWAY))),
        Stmt::LoopbackReturn => {
            // lo is ifindex 1 in every network namespace.
            e.extend(meta_eq(NFT_META_IIF, &1u32.to_ne_bytes()));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::ForeignMarkReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(Expr::Lookup {
                set: MAP_MARK.into(),
                set_id: ids.of(MAP_MARK),
                sreg: NFT_REG_1,
                dreg: None,
                invert: true,
            });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::LocalUnmarkReturn => {
            e.push(Expr::Fib { flags: NFTA_FIB_F_DADDR, result: NFT_FIB_RESULT_ADDRTYPE, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            e.extend(set_mark(0));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::ReplyUnmarkReturn => {
            e.push(Expr::Ct { key: NFT_CT_DIRECTION, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: vec![IP_CT_DIR_REPLY] });
            e.extend(set_mark(0));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::NewFlowClassify => {
            e.extend(ct_bits_set(NFT_CT_STATE, NF_CT_STATE_NEW));
            e.extend(ct_mark_eq(0));
            e.push(verdict(NFT_JUMP, Some(crate::names::CHAIN_GATEWAY_CLASSIFY)));
        }
        Stmt::ClearMark => e.extend(set_mark(0)),
        Stmt::FlowDnsReturn { mark, l4 } => {
            e.extend(ct_mark_eq(*mark));
            e.extend(dport_53(l4.proto()));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::FlowMark { mark } => {
            e.extend(ct_mark_eq(*mark));
            e.extend(set_mark(*mark));
        }
        Stmt::BroutedKeep => {
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] });
            e.push(Expr::MetaLoad { key: NFT_META_MARK, dreg: NFT_REG_1 });
            e.push(Expr::CtSet { key: NFT_CT_MARK, sreg: NFT_REG_1 });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::SameIfaceReturn => {
            let flags = NFTA_FIB_F_DADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT;
            e.push(Expr::Fib { flags, result: NFT_FIB_RESULT_OIF, dreg: NFT_REG_1 });
            e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 1u32.to_ne_bytes().to_vec() });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::GwEntry { m, bridge, counter, verdict: v } => {
            e.extend(gw_match(b, m, *bridge));
            if *counter {
                e.push(Expr::Counter);
            }
            e.push(match v {
                GwVerdict::Return => verdict(NFT_RETURN, None),
                GwVerdict::Drop => verdict(NF_DROP, None),
                GwVerdict::Goto(c) => verdict(NFT_GOTO, Some(c)),
            });
        }
        Stmt::Ipv6Return { bridge } => {
            if *bridge {
                e.extend(ether_type_eq(ETH_P_IPV6));
            } else {
                e.extend(meta_eq(NFT_META_NFPROTO, &[NFPROTO_IPV6]));
            }
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::UdpReturn { keep_dns } => {
            e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_UDP as u8]));
            if *keep_dns {
                e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
                e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
            }
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::DnsReturn { l4 } => {
            e.extend(dport_53(l4.proto()));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::SetFlowMark { mark } => {
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(mark.to_ne_bytes().to_vec()) });
            e.push(Expr::CtSet { key: NFT_CT_MARK, sreg: NFT_REG_1 });
        }
        Stmt::Broute { mark } => {
            e.extend(set_mark(*mark));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(vec![1]) });
            e.push(Expr::MetaSet { key: NFT_META_BRI_BROUTE, sreg: NFT_REG_1 });
        }
        Stmt::NotHostReturn => {
            e.push(Expr::MetaLoad { key: NFT_META_PKTTYPE, dreg: NFT_REG_1 });
            // PACKET_HOST
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::TcpNotSynReturn => {
            e.extend(meta_eq(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]));
            e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 13, len: 1, dreg: NFT_REG_1 });
            // fin 0x01 | syn 0x02 | rst 0x04 | ack 0x10
            e.push(Expr::Bitwise { sreg: NFT_REG_1, dreg: NFT_REG_1, mask: vec![0x17], xor: vec![0] });
            e.push(Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0x02] });
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::BridgeBypassReturn { v6 } => {
            let (proto, offset, len, set) =
                if *v6 { (ETH_P_IPV6, 24, 16, SET_BYPASS6) } else { (ETH_P_IP, 16, 4, SET_BYPASS4) };
            e.extend(ether_type_eq(proto));
            e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: NFT_REG_1 });
            e.push(lookup(set, ids, None));
            e.push(verdict(NFT_RETURN, None));
        }
        Stmt::DnsRedirect { mark, l4, v6, port } => {
            e.extend(ct_mark_eq(*mark));
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
            e.extend(dport_53(l4.proto()));
            e.push(Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(port.to_be_bytes().to_vec()) });
            e.push(Expr::Redir { reg_proto: NFT_REG_1 });
        }
    }
    e
}

/// `meta mark set MARK`
fn set_mark(mark: u32) -> [Expr; 2] {
    [
        Expr::Immediate { dreg: NFT_REG_1, data: Data::Value(mark.to_ne_bytes().to_vec()) },
        Expr::MetaSet { key: NFT_META_MARK, sreg: NFT_REG_1 },
    ]
}

/// `ct KEY & BITS != 0` (`ct status dnat`, `ct state new`): the conntrack
/// word in register 1, masked, compared with zero.
fn ct_bits_set(key: u32, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: NFT_REG_1 },
        Expr::Bitwise { sreg: NFT_REG_1, dreg: NFT_REG_1, mask: bits.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { op: NFT_CMP_NEQ, sreg: NFT_REG_1, data: vec![0; 4] },
    ]
}

/// `ct mark MARK`
fn ct_mark_eq(mark: u32) -> [Expr; 2] {
    [
        Expr::Ct { key: NFT_CT_MARK, dreg: NFT_REG_1 },
        Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: mark.to_ne_bytes().to_vec() },
    ]
}

/// `ether type TYPE` (the bridge family's `ip`/`ip6` dependency)
fn ether_type_eq(ty: u16) -> [Expr; 2] {
    [
        Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: 12, len: 2, dreg: NFT_REG_1 },
        Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: ty.to_be_bytes().to_vec() },
    ]
}

/// `iifname "br-*"` / `meta ibrname "br-*"`, then `ip saddr { ... }` in an
/// anonymous interval set bound to the rule.
fn gw_match(b: &mut Batch, m: &GwMatch, bridge: bool) -> Vec<Expr> {
    let mut e = Vec::new();
    if let Some(iface) = &m.iface {
        let key = if bridge { NFT_META_BRI_IIFNAME } else { NFT_META_IIFNAME };
        e.extend(meta_eq(key, &iface.cmp_bytes()));
    }
    if let Some((v6, ranges)) = &m.source {
        let (len, key_type, offset) = if *v6 { (16, TYPE_IP6ADDR, 8) } else { (4, TYPE_IPADDR, 12) };
        if bridge {
            e.extend(ether_type_eq(if *v6 { ETH_P_IPV6 } else { ETH_P_IP }));
        } else {
            e.extend(meta_eq(NFT_META_NFPROTO, &[if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]));
        }
        let id = b.set_id();
        let name = "__set%d";
        let what = format!("add set {} {TABLE} (sources)", family_word(b));
        let msg = b.begin(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, what);
        let t = b.table.clone();
        b.w.str(NFTA_SET_TABLE, &t);
        b.w.str(NFTA_SET_NAME, name);
        b.w.u32be(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL);
        b.w.u32be(NFTA_SET_KEY_TYPE, key_type);
        b.w.u32be(NFTA_SET_KEY_LEN, len as u32);
        b.w.u32be(NFTA_SET_ID, id);
        b.end(msg);
        interval_elements(b, name, Some(id), ranges, len);
        e.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len: len as u32, dreg: NFT_REG_1 });
        e.push(Expr::Lookup { set: name.into(), set_id: Some(id), sreg: NFT_REG_1, dreg: None, invert: false });
    }
    e
}

/// `meta mark 0x00000000 socket cgroupv2 level N [!=] @cgroup-class`, the
/// lookup's value (the class) loaded into `dreg` when given.
fn unclassified_socket_lookup(level: u32, ids: &SetIds, dreg: Option<u32>, invert: bool) -> Vec<Expr> {
    let mut e = meta_eq(NFT_META_MARK, &[0; 4]).to_vec();
    e.push(Expr::SocketCgroup { level, dreg: NFT_REG_1 });
    e.push(Expr::Lookup { set: MAP_CGROUP.into(), set_id: ids.of(MAP_CGROUP), sreg: NFT_REG_1, dreg, invert });
    e
}

/// `meta l4proto P th dport 53`
fn dport_53(proto: u8) -> Vec<Expr> {
    let mut e = meta_eq(NFT_META_L4PROTO, &[proto]).to_vec();
    e.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: NFT_REG_1 });
    e.push(Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: 53u16.to_be_bytes().to_vec() });
    e
}

/// `add rule inet cgtproxy CHAIN STMT`, appended; or, with `before`, `insert
/// rule inet cgtproxy CHAIN position HANDLE STMT` (placed before HANDLE).
pub fn rule(b: &mut Batch, chain: &str, s: &Stmt, ids: &SetIds, before: Option<u64>) {
    let exprs = exprs(b, s, ids);
    let (flags, verb) = match before {
        None => (NLM_F_CREATE | NLM_F_APPEND, "add"),
        Some(_) => (NLM_F_CREATE, "insert"),
    };
    let what = format!("{verb} rule {} {TABLE} {chain} {s}", family_word(b));
    let m = b.begin(NFT_MSG_NEWRULE, flags, what);
    let t = b.table.clone();
    b.w.str(NFTA_RULE_TABLE, &t);
    b.w.str(NFTA_RULE_CHAIN, chain);
    if let Some(handle) = before {
        b.w.u64be(NFTA_RULE_POSITION, handle);
    }
    let list = b.w.nest(NFTA_RULE_EXPRESSIONS);
    for x in &exprs {
        x.encode(&mut b.w);
    }
    b.w.nest_end(list);
    b.end(m);
}

/// One set element as sent to the kernel.
#[derive(Debug, Clone)]
pub enum Elem {
    /// A key alone (set element, or a key to delete).
    Key(Vec<u8>),
    /// The first address after an interval (NFT_SET_ELEM_INTERVAL_END).
    IntervalEnd(Vec<u8>),
    /// A map element.
    Mapping(Vec<u8>, Data),
}

impl Elem {
    pub fn encode(&self, w: &mut MsgWriter) {
        let e = w.nest(NFTA_LIST_ELEM);
        match self {
            Elem::Key(k) => encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone())),
            Elem::IntervalEnd(k) => {
                encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone()));
                w.u32be(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            Elem::Mapping(k, d) => {
                encode_data(w, NFTA_SET_ELEM_KEY, &Data::Value(k.clone()));
                encode_data(w, NFTA_SET_ELEM_DATA, d);
            }
        }
        w.nest_end(e);
    }
}

/// `add|delete element inet cgtproxy SET { ... }`, in as many messages as
/// their size needs.
pub fn elements(b: &mut Batch, set: &str, set_id: Option<u32>, add: bool, items: impl IntoIterator<Item = Elem>) {
    let (msg, flags, verb) =
        if add { (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add") } else { (NFT_MSG_DELSETELEM, 0, "delete") };
    let mut open: Option<(usize, usize)> = None;
    for (count, item) in items.into_iter().enumerate() {
        if let Some((m, list)) = open
            && b.w.len() - list > ELEMENTS_BYTES
        {
            b.w.nest_end(list);
            b.end(m);
            open = None;
        }
        if open.is_none() {
            let table = b.table.clone();
            let what = format!("{verb} element {} {table} {set} (from #{count})", family_word(b));
            let m = b.begin(msg, flags, what);
            b.w.str(NFTA_SET_ELEM_LIST_TABLE, &table);
            b.w.str(NFTA_SET_ELEM_LIST_SET, set);
            if let Some(id) = set_id {
                b.w.u32be(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            open = Some((m, b.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS)));
        }
        item.encode(&mut b.w);
    }
    if let Some((m, list)) = open {
        b.w.nest_end(list);
        b.end(m);
    }
}

/// Interval set elements: each range is a start element and an end element
/// (the address after the range, flagged INTERVAL_END), as `nft` sends them.
fn interval_elements(b: &mut Batch, set: &str, id: Option<u32>, ranges: &[Interval], len: usize) {
    let key =
        |x: u128| -> Vec<u8> { if len == 4 { (x as u32).to_be_bytes().to_vec() } else { x.to_be_bytes().to_vec() } };
    let max = if len == 4 { u128::from(u32::MAX) } else { u128::MAX };
    let mut items = Vec::new();
    for &(start, end) in ranges {
        items.push(Elem::Key(key(start)));
        if end < max {
            items.push(Elem::IntervalEnd(key(end + 1)));
        }
    }
    elements(b, set, id, true, items);
}

/// `add element inet cgtproxy cgroup-class { ID : CLASS, ... }`
pub fn cgroup_elements<'a>(b: &mut Batch, items: impl Iterator<Item = (&'a u64, &'a Element)>, id: Option<u32>) {
    let list = items
        .map(|(cg, e)| Elem::Mapping(cg.to_ne_bytes().to_vec(), Data::Value(e.verdict.class().to_ne_bytes().to_vec())));
    elements(b, MAP_CGROUP, id, true, list);
}

/// `delete element inet cgtproxy cgroup-class { ID, ... }`
pub fn delete_cgroup_elements(b: &mut Batch, ids: &[u64]) {
    let list = ids.iter().map(|cg| Elem::Key(cg.to_ne_bytes().to_vec()));
    elements(b, MAP_CGROUP, None, false, list);
}
