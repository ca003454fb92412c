//! Kernel notifications instead of polling: nf_tables changes
//! (NFNLGRP_NFTABLES) and routing rule and route changes (RTNLGRP_*), each
//! on its own netlink socket the event loop polls.
//!
//! A notification's nlmsg_pid is the port of the socket whose request caused
//! it, so our own commits are told apart from everyone else's. Our own
//! nf_tables notifications are not wasted: they carry the handles of the
//! `classify` rules we added and the generation id of our commit, so no
//! commit needs a dump or a GETGEN round trip afterwards.

use crate::netlink::{Message, NlSocket, attrs, messages};
use crate::nft::sys::{
    NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES, NFPROTO_BRIDGE, NFPROTO_INET, NFT_MSG_DELRULE, NFT_MSG_DELTABLE,
};
use crate::nft::sys::{
    NFT_MSG_DELSET, NFT_MSG_DELSETELEM, NFT_MSG_NEWGEN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM,
    NFTA_GEN_ID,
};
use crate::route::{self, RTA_TABLE, RTM_DELROUTE, RTM_DELRULE, RTM_NEWROUTE};

/// NFNLGRP_NFTABLES in enum nfnetlink_groups.
const NFNLGRP_NFTABLES: u32 = 7;

/// What a batch of notifications says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Another program changed `table inet cgtproxy` (its table, chains,
    /// sets, maps, elements or rules, or deleted it, e.g. `nft flush ruleset`).
    pub outside_table: bool,
    /// Another program deleted one of our `ip rule`s or routes.
    pub outside_routing: bool,
    /// The kernel dropped notifications (ENOBUFS): anything may have changed.
    pub overrun: bool,
    /// The newest generation id seen (a commit by anyone ends with it).
    pub generation: Option<u32>,
    /// Our own changes to `classify`, in order.
    pub own: Vec<Own>,
    /// Sets of other tables that changed (created, deleted, elements added
    /// or removed), as (family, table, set, netlink port of the changer):
    /// the sets classification is published to are among them.
    pub foreign_sets: Vec<(u8, String, String, u32)>,
}

/// One of our own changes, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// Our table was deleted (a full replace starts with it): no rules left.
    TableDeleted,
    /// A `socket cgroupv2 level N` rule: (level, handle).
    LevelRule(u32, u64),
    /// A rule with this handle is gone.
    RuleDeleted(u64),
}

/// The two notification sockets.
pub struct KernelEvents {
    nft: NlSocket,
    route: NlSocket,
    /// Our table's sets that other programs fill (dynamic named sets):
    /// their elements changing is not a change to undo.
    pub dynamic_sets: Vec<String>,
}

impl KernelEvents {
    pub fn open() -> std::io::Result<Self> {
        let nft = NlSocket::monitor(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES])?;
        let route = NlSocket::monitor(
            libc::NETLINK_ROUTE,
            &[route::RTNLGRP_IPV4_RULE, route::RTNLGRP_IPV6_RULE, route::RTNLGRP_IPV4_ROUTE, route::RTNLGRP_IPV6_ROUTE],
        )?;
        Ok(KernelEvents { nft, route, dynamic_sets: Vec::new() })
    }

    pub fn nft_fd(&self) -> std::os::fd::RawFd {
        self.nft.as_raw_fd()
    }

    pub fn route_fd(&self) -> std::os::fd::RawFd {
        self.route.as_raw_fd()
    }

    /// Let only route notifications of `table` through (rule notifications
    /// all pass: there are few). Other tables' routes, a router's or a
    /// Kubernetes node's churn, are dropped in the kernel and never wake us.
    pub fn filter_routes(&self, table: u32) -> std::io::Result<()> {
        self.route.attach_filter(&route_filter(table))
    }

    /// Read everything queued on both sockets. `nft_port`/`route_port`: our
    /// request sockets; `marks`/`table`: the routing we keep.
    pub fn read(&mut self, nft_port: u32, route_port: u32, marks: &[u32], table: u32) -> Seen {
        let mut seen = Seen::default();
        let dynamic = &self.dynamic_sets;
        drain_into(&mut self.nft, &mut seen, |msgs, seen| nft_messages(msgs, nft_port, dynamic, seen));
        drain_into(&mut self.route, &mut seen, |msgs, seen| route_messages(msgs, route_port, marks, table, seen));
        seen
    }
}

/// Hand every queued notification of `sock` to `handle`, one datagram at a
/// time (the notifications of a large commit are never all in memory). A
/// lost or unreadable notification (ENOBUFS, a malformed datagram) sets
/// `seen.overrun`: what is still queued is stale and dropped, and the
/// caller resynchronises instead of trusting what was read.
fn drain_into(sock: &mut NlSocket, seen: &mut Seen, mut handle: impl FnMut(&[Message], &mut Seen)) {
    let read = sock.each_queued(|d| match messages(d) {
        Ok(msgs) => handle(&msgs, seen),
        Err(_) => seen.overrun = true,
    });
    if read.is_err() {
        sock.drain();
        seen.overrun = true;
    }
}

/// The family of an nf_tables message that addresses one of our tables
/// (`table inet cgtproxy`, gateway mode's `table bridge cgtproxy`). Every
/// object message (table, chain, rule, set, element list, object,
/// flowtable) has its table name as attribute 1.
fn our_table_family(payload: &[u8]) -> Option<u8> {
    let family = *payload.first()?;
    let named = attrs(payload.get(4..).unwrap_or_default())
        .find(|(t, _)| *t == 1)
        .is_some_and(|(_, v)| v.strip_suffix(b"\0") == Some(crate::names::TABLE.as_bytes()));
    (named && (family == NFPROTO_INET || family == NFPROTO_BRIDGE)).then_some(family)
}

/// (family, table, set) of a set or element-list message: both carry the
/// table as attribute 1 and the set's name as attribute 2.
fn foreign_set(payload: &[u8]) -> Option<(u8, String, String)> {
    let family = *payload.first()?;
    let name = |ty: u16| {
        attrs(payload.get(4..).unwrap_or_default())
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| String::from_utf8_lossy(v.strip_suffix(b"\0").unwrap_or(v)).into_owned())
    };
    Some((family, name(1)?, name(2)?))
}

pub fn nft_messages(msgs: &[Message], our_port: u32, dynamic: &[String], seen: &mut Seen) {
    for m in msgs {
        if m.ty >> 8 != NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let msg = m.ty & 0xff;
        if msg == NFT_MSG_NEWGEN {
            let id = attrs(m.payload.get(4..).unwrap_or_default())
                .find(|(t, _)| *t == NFTA_GEN_ID)
                .and_then(|(_, v)| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes);
            seen.generation = id.or(seen.generation);
            continue;
        }
        let Some(family) = our_table_family(m.payload) else {
            if matches!(msg, NFT_MSG_NEWSET | NFT_MSG_DELSET | NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM)
                && let Some(set) = foreign_set(m.payload)
            {
                seen.foreign_sets.push((set.0, set.1, set.2, m.pid));
            }
            continue;
        };
        // Elements others add to (or that expire from) a dynamic named set
        // are what that set is for.
        if matches!(msg, NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM)
            && foreign_set(m.payload).is_some_and(|(_, _, set)| dynamic.contains(&set))
        {
            continue;
        }
        // Either table changed by someone else: the full apply restores both.
        if m.pid != our_port {
            seen.outside_table = true;
            continue;
        }
        // Our own level-rule bookkeeping is of the inet table only (a full
        // apply deletes and re-adds the bridge table, too).
        if family != NFPROTO_INET {
            continue;
        }
        match msg {
            NFT_MSG_DELTABLE => seen.own.push(Own::TableDeleted),
            NFT_MSG_NEWRULE => {
                if let Some((level, handle)) = crate::nft::level_rule(m.payload) {
                    seen.own.push(Own::LevelRule(level, handle));
                }
            }
            NFT_MSG_DELRULE => {
                if let Some(h) = crate::nft::rule_handle(m.payload) {
                    seen.own.push(Own::RuleDeleted(h));
                }
            }
            _ => {}
        }
    }
}

pub fn route_messages(msgs: &[Message], our_port: u32, marks: &[u32], table: u32, seen: &mut Seen) {
    for m in msgs.iter().filter(|m| m.pid != our_port) {
        let ours = match m.ty {
            RTM_DELRULE => {
                route::parse_fwmark_rule(m.payload).is_some_and(|r| r.table == table && marks.contains(&r.mark))
            }
            RTM_DELROUTE => !marks.is_empty() && route::parse_local_default(m.payload) == Some((table, true)),
            _ => false,
        };
        seen.outside_routing |= ours;
    }
}

/// A classic BPF program for the route socket: accept everything but route
/// messages of other tables. BPF loads are big-endian; netlink fields are
/// host order, hence the byte swaps. The kernel puts RTA_TABLE first in
/// every route message (rt_fill_info, rt6_fill_node).
pub fn route_filter(table: u32) -> Vec<libc::sock_filter> {
    const LD_H_ABS: u16 = 0x28;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let be16 = |v: u16| u32::from(u16::from_be_bytes(v.to_ne_bytes()));
    let be32 = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(LD_H_ABS, 0, 0, 4),               // 0: nlmsg_type
        op(JEQ_K, 1, 0, be16(RTM_NEWROUTE)), // 1: -> 3
        op(JEQ_K, 0, 4, be16(RTM_DELROUTE)), // 2: else accept
        op(LD_H_ABS, 0, 0, 30),              // 3: first attribute's type
        op(JEQ_K, 0, 2, be16(RTA_TABLE)),    // 4: unexpected layout: accept
        op(LD_W_ABS, 0, 0, 32),              // 5: its value
        op(JEQ_K, 0, 1, be32(table)),        // 6: another table: drop
        op(RET_K, 0, 0, u32::MAX),           // 7: accept
        op(RET_K, 0, 0, 0),                  // 8: drop
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::MsgWriter;

    fn nft_msg(w: &mut MsgWriter, msg: u16, pid: u32, family: u8, table: &str, extra: impl FnOnce(&mut MsgWriter)) {
        let m = w.begin((NFNL_SUBSYS_NFTABLES << 8) | msg, 0, 1);
        w.buf[m + 12..m + 16].copy_from_slice(&pid.to_ne_bytes());
        w.raw(&[family, 0, 0, 0]);
        w.str(1, table);
        extra(w);
        w.end(m);
    }

    #[test]
    fn outside_changes_to_our_table_are_told_from_our_own() {
        use crate::nft::sys::*;
        let mut w = MsgWriter::new();
        // Someone else's table: ignored.
        nft_msg(&mut w, NFT_MSG_DELTABLE, 77, NFPROTO_INET, "filter", |_| {});
        // Our own commit: a level rule with its handle.
        nft_msg(&mut w, NFT_MSG_NEWRULE, 42, NFPROTO_INET, "cgtproxy", |w| {
            w.str(NFTA_RULE_CHAIN, "classify");
            w.u64be(NFTA_RULE_HANDLE, 9);
            let l = w.nest(NFTA_RULE_EXPRESSIONS);
            let e = w.nest(NFTA_LIST_ELEM);
            w.str(NFTA_EXPR_NAME, "socket");
            let d = w.nest(NFTA_EXPR_DATA);
            w.u32be(NFTA_SOCKET_LEVEL, 3);
            w.nest_end(d);
            w.nest_end(e);
            w.nest_end(l);
        });
        let m = w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, 0, 1);
        w.raw(&[0, 0, 0, 0]);
        w.u32be(NFTA_GEN_ID, 1234);
        w.end(m);
        let mut seen = Seen::default();
        nft_messages(&messages(&w.buf).unwrap(), 42, &[], &mut seen);
        assert_eq!(seen, Seen { generation: Some(1234), own: vec![Own::LevelRule(3, 9)], ..Default::default() });
        // `nft flush ruleset` by another process; an ip-family table of the same name is not ours.
        let mut w = MsgWriter::new();
        nft_msg(&mut w, NFT_MSG_DELTABLE, 0, NFPROTO_IPV4, "cgtproxy", |_| {});
        nft_msg(&mut w, NFT_MSG_DELSETELEM, 0, NFPROTO_INET, "cgtproxy", |_| {});
        let mut seen = Seen::default();
        nft_messages(&messages(&w.buf).unwrap(), 42, &[], &mut seen);
        assert!(seen.outside_table && seen.own.is_empty());
        // Gateway mode's bridge table: someone else's deletion is healed;
        // our own re-creation is not the inet table's deletion.
        let bridge = |pid: u32| {
            let mut w = MsgWriter::new();
            nft_msg(&mut w, NFT_MSG_DELTABLE, pid, NFPROTO_BRIDGE, "cgtproxy", |_| {});
            let mut seen = Seen::default();
            nft_messages(&messages(&w.buf).unwrap(), 42, &[], &mut seen);
            seen
        };
        assert!(bridge(0).outside_table);
        assert_eq!(bridge(42), Seen::default());
    }

    #[test]
    fn only_deletions_of_our_routing_count() {
        let rule = |pid: u32, mark: u32| {
            let mut w = MsgWriter::new();
            let m = w.begin(RTM_DELRULE, 0, 0);
            w.buf[m + 12..m + 16].copy_from_slice(&pid.to_ne_bytes());
            w.raw(&[2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            w.u32ne(10, mark);
            w.u32ne(15, 300);
            w.end(m);
            w.buf
        };
        let check = |buf: Vec<u8>| {
            let mut seen = Seen::default();
            route_messages(&messages(&buf).unwrap(), 5, &[3000], 300, &mut seen);
            seen.outside_routing
        };
        assert!(check(rule(0, 3000)));
        assert!(!check(rule(5, 3000)), "our own deletion");
        assert!(!check(rule(0, 3001)), "another mark");
    }

    #[test]
    fn route_filter_is_a_valid_program() {
        let prog = route_filter(300);
        // Every jump lands inside the program and it ends with returns.
        for (i, op) in prog.iter().enumerate() {
            if op.code == 0x15 {
                assert!(i + 1 + (op.jt.max(op.jf) as usize) < prog.len());
            }
        }
        assert_eq!(prog.last().unwrap().code, 0x06);
    }
}
