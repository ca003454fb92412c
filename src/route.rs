//! Policy routing for TPROXY marks, over rtnetlink:
//!
//! ```text
//! ip rule add fwmark MARK lookup TABLE          (and ip -6 rule ...)
//! ip route add local default dev lo table TABLE (and ip -6 route ...)
//! ```
//!
//! A marked packet re-routed in the output path lands on `lo` and reaches
//! prerouting, where the TPROXY statement hands it to the proxy. Adding is
//! idempotent (an existing entry is fine); removing a missing one is fine.

use crate::netlink::{
    MsgWriter, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkError, NlSocket, attrs,
};

pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
/// rtnetlink multicast groups (enum rtnetlink_groups).
pub const RTNLGRP_IPV4_ROUTE: u32 = 7;
pub const RTNLGRP_IPV4_RULE: u32 = 8;
pub const RTNLGRP_IPV6_ROUTE: u32 = 11;
pub const RTNLGRP_IPV6_RULE: u32 = 19;
const FR_ACT_TO_TBL: u8 = 1;
const FIB_RULE_INVERT: u32 = 0x2;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_SUPPRESS_IFGROUP: u16 = 13;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_FWMASK: u16 = 16;
const FRA_PAD: u16 = 18;
const FRA_PROTOCOL: u16 = 21;
const RTA_OIF: u16 = 4;
/// Where our `fwmark MARK lookup TABLE` rules go: before the rules VPNs add
/// (Tailscale's from 5210, wg-quick's `not fwmark 0xca6c lookup 51820`
/// just before `main` at 32766, NetworkManager's WireGuard ones), which
/// would otherwise send a packet carrying a tproxy mark into the tunnel
/// instead of to the local proxy. Only packets with our marks match.
pub const RULE_PRIORITY: u32 = 5000;
pub const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
const RTPROT_STATIC: u8 = 4;
/// rtm_table value that says "see RTA_TABLE" for tables above 255.
const RT_TABLE_COMPAT: u8 = 252;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open an rtnetlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("loopback interface lo not found in this network namespace")]
    NoLoopback,
    #[error("routing: {0}")]
    Netlink(#[from] NetlinkError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn af(self) -> u8 {
        match self {
            Family::V4 => libc::AF_INET as u8,
            Family::V6 => libc::AF_INET6 as u8,
        }
    }

    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip -6",
        }
    }
}

fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_COMPAT)
}

/// A `fwmark MARK lookup TABLE` rule exactly as we add it: mask all ones,
/// not inverted, action `lookup`, no other selector. Someone else's rule that
/// only looks alike (`not fwmark`, a mask, an `iif`, `goto`, ...) is not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwmarkRule {
    pub mark: u32,
    pub table: u32,
    /// The priority the kernel gave it; deletion names it, so exactly this
    /// rule goes.
    pub priority: u32,
}

/// Parse one RTM_NEWRULE/RTM_DELRULE payload (struct fib_rule_hdr and its
/// attributes); `Some` only for a rule of the shape [`Routes`] adds.
pub fn parse_fwmark_rule(payload: &[u8]) -> Option<FwmarkRule> {
    // family, dst_len, src_len, tos, table, res1, res2, action; u32 flags.
    let hdr: &[u8; 12] = payload.get(..12)?.try_into().ok()?;
    let flags = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
    if hdr[1] != 0 || hdr[2] != 0 || hdr[3] != 0 || hdr[7] != FR_ACT_TO_TBL || flags & FIB_RULE_INVERT != 0 {
        return None;
    }
    let (mut mark, mut mask, mut table, mut priority) = (None, None, Some(u32::from(hdr[4])), 0);
    for (ty, v) in attrs(&payload[12..]) {
        let n = <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes);
        match ty {
            FRA_FWMARK => mark = Some(n?),
            FRA_FWMASK => mask = Some(n?),
            FRA_TABLE => table = Some(n?),
            FRA_PRIORITY => priority = n?,
            // Always reported; "none" is all ones.
            FRA_SUPPRESS_PREFIXLEN | FRA_SUPPRESS_IFGROUP if n? == u32::MAX => {}
            FRA_PROTOCOL | FRA_PAD => {}
            // Any other selector (iif, oif, uid range, ports, dst, src, ...)
            // or action data (goto) makes it someone else's rule.
            _ => return None,
        }
    }
    if mask.unwrap_or(u32::MAX) != u32::MAX {
        return None;
    }
    Some(FwmarkRule { mark: mark.filter(|m| *m != 0)?, table: table?, priority })
}

/// The table and shape of one RTM_NEWROUTE/RTM_DELROUTE payload: Some(table)
/// when it is `local default dev lo`-like (dst_len 0, type local).
pub fn parse_local_default(payload: &[u8]) -> Option<(u32, bool)> {
    let hdr = payload.get(..12)?;
    let mut table = u32::from(hdr[4]);
    for (ty, v) in attrs(&payload[12..]) {
        if let (RTA_TABLE, Ok(b)) = (ty, <[u8; 4]>::try_from(v)) {
            table = u32::from_ne_bytes(b);
        }
    }
    Some((table, hdr[1] == 0 && hdr[7] == RTN_LOCAL))
}

/// Is IPv6 usable in this network namespace, as far as /proc/sys says?
/// Not when the kernel was booted with `ipv6.disable=1` (no
/// /proc/sys/net/ipv6) or `disable_ipv6` is set on `lo` (our routes go
/// through it). None when /proc/sys cannot be read (systemd's
/// ProcSubset=pid): [`Routes::open`] then asks rtnetlink.
pub fn ipv6_sysctl() -> Option<bool> {
    match std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6") {
        Ok(v) => Some(v.trim() == "0"),
        Err(_) if std::path::Path::new("/proc/sys/net/ipv4").is_dir() => Some(false),
        Err(_) => None,
    }
}

/// An rtnetlink connection in the current network namespace.
#[derive(Debug)]
pub struct Routes {
    sock: NlSocket,
    /// IPv4, and IPv6 unless it is disabled ([`ipv6_sysctl`]).
    families: Vec<Family>,
}

impl Routes {
    pub fn open() -> Result<Self, RouteError> {
        let sock = NlSocket::open(libc::NETLINK_ROUTE).map_err(RouteError::Open)?;
        // Route dumps name one table and the kernel reads only that one.
        sock.strict_check();
        let mut routes = Routes { sock, families: Family::BOTH.to_vec() };
        // Without /proc/sys: a kernel without IPv6 refuses an IPv6 rule dump
        // with EAFNOSUPPORT.
        let ipv6 = ipv6_sysctl().unwrap_or_else(|| {
            !matches!(routes.rules(Family::V6), Err(RouteError::Netlink(e)) if e.errno() == Some(libc::EAFNOSUPPORT))
        });
        if !ipv6 {
            routes.families = vec![Family::V4];
        }
        Ok(routes)
    }

    /// Whether IPv6 routing is managed (false: IPv6 is disabled here).
    pub fn ipv6(&self) -> bool {
        self.families.contains(&Family::V6)
    }

    /// The socket's netlink port id (notifications of our own changes carry it).
    pub fn port_id(&self) -> std::io::Result<u32> {
        self.sock.port_id()
    }

    fn send(&mut self, ty: u16, flags: u16, what: &str, body: impl FnOnce(&mut MsgWriter)) -> Result<(), NetlinkError> {
        let seq = self.sock.next_seq();
        let mut w = MsgWriter::new();
        let m = w.begin(ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        body(&mut w);
        w.end(m);
        w.check().map_err(|(ty, len)| NetlinkError::TooLong { what: what.to_owned(), ty, len })?;
        self.sock.request(&w.buf, seq, what)
    }

    /// `ip rule add fwmark MARK lookup TABLE`, or with `Some(priority)`
    /// `ip rule del fwmark MARK lookup TABLE priority PRIORITY` (the kernel
    /// matches a deletion on the attributes given: with the priority, only
    /// that rule).
    fn rule(&mut self, del: Option<u32>, family: Family, mark: u32, table: u32) -> Result<(), NetlinkError> {
        let (ty, flags, what) = match del {
            None => (
                RTM_NEWRULE,
                NLM_F_CREATE | NLM_F_EXCL,
                format!("{} rule add fwmark {mark:#x} lookup {table} priority {RULE_PRIORITY}", family.ip()),
            ),
            Some(p) => {
                (RTM_DELRULE, 0, format!("{} rule del fwmark {mark:#x} lookup {table} priority {p}", family.ip()))
            }
        };
        self.send(ty, flags, &what, |w| {
            // struct fib_rule_hdr: family, dst_len, src_len, tos, table,
            // res1, res2, action; u32 flags.
            w.raw(&[family.af(), 0, 0, 0, header_table(table), 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0]);
            w.u32ne(FRA_FWMARK, mark);
            w.u32ne(FRA_FWMASK, u32::MAX);
            w.u32ne(FRA_TABLE, table);
            w.u32ne(FRA_PRIORITY, del.unwrap_or(RULE_PRIORITY));
        })
    }

    /// `ip route add|del local default dev lo table TABLE`
    fn local_route(&mut self, add: bool, family: Family, table: u32) -> Result<(), RouteError> {
        let lo = lo_index()?;
        let verb = if add { "add" } else { "del" };
        let what = format!("{} route {verb} local default dev lo table {table}", family.ip());
        let (ty, flags) = if add { (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL) } else { (RTM_DELROUTE, 0) };
        self.send(ty, flags, &what, |w| {
            // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
            // scope, type; u32 flags.
            w.raw(&[family.af(), 0, 0, 0, header_table(table), RTPROT_STATIC, RT_SCOPE_HOST, RTN_LOCAL, 0, 0, 0, 0]);
            w.u32ne(RTA_TABLE, table);
            w.u32ne(RTA_OIF, lo);
        })?;
        Ok(())
    }

    /// Add the rules and routes for `marks`, IPv4 and IPv6. Entries that
    /// exist already (from a killed instance, or the running config) are
    /// kept, not duplicated: the kernel's NLM_F_EXCL check for rules
    /// compares priorities, and ours have none, so we look first. On error,
    /// what this call added is removed again: nothing is left half-applied.
    pub fn install(&mut self, marks: &[u32], table: u32) -> Result<(), RouteError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut added: Vec<(Family, Option<u32>)> = Vec::new();
        let result = self.install_into(marks, table, &mut added);
        if result.is_err() {
            for (family, what) in added.into_iter().rev() {
                let _ = match what {
                    Some(mark) => self.remove_rules_in(family, &[mark], table),
                    None => self.local_route(false, family, table).err().into_iter().collect(),
                };
            }
        }
        result
    }

    fn install_into(
        &mut self,
        marks: &[u32],
        table: u32,
        added: &mut Vec<(Family, Option<u32>)>,
    ) -> Result<(), RouteError> {
        for family in self.families.clone() {
            if !self.has_local_route(family, table)? {
                self.local_route(true, family, table)?;
                added.push((family, None));
            }
            let existing = self.rules(family)?;
            for &mark in marks.iter().filter(|&&m| !existing.iter().any(|r| r.mark == m && r.table == table)) {
                self.rule(None, family, mark, table)?;
                added.push((family, Some(mark)));
            }
        }
        Ok(())
    }

    /// Remove what [`Routes::install`] adds; collects every error.
    pub fn remove(&mut self, marks: &[u32], table: u32) -> Vec<RouteError> {
        if marks.is_empty() {
            return Vec::new();
        }
        let mut errors = self.remove_rules(marks, table);
        errors.extend(self.remove_local_routes(table));
        errors
    }

    /// `ip rule del fwmark MARK lookup TABLE` for each mark, both families:
    /// every rule of exactly that shape (an older instance may have added
    /// duplicates), each named by its priority.
    pub fn remove_rules(&mut self, marks: &[u32], table: u32) -> Vec<RouteError> {
        let mut errors = Vec::new();
        for family in self.families.clone() {
            errors.extend(self.remove_rules_in(family, marks, table));
        }
        errors
    }

    fn remove_rules_in(&mut self, family: Family, marks: &[u32], table: u32) -> Vec<RouteError> {
        let rules = match self.rules(family) {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        let mut errors = Vec::new();
        for r in rules.iter().filter(|r| r.table == table && marks.contains(&r.mark)) {
            match self.rule(Some(r.priority), family, r.mark, table) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => errors.push(e.into()),
            }
        }
        errors
    }

    /// `ip route del local default dev lo table TABLE`, both families.
    pub fn remove_local_routes(&mut self, table: u32) -> Vec<RouteError> {
        let mut errors = Vec::new();
        for family in self.families.clone() {
            match self.local_route(false, family, table) {
                Ok(()) => {}
                // ESRCH or ENOENT: it was not there.
                Err(RouteError::Netlink(e)) if matches!(e.errno(), Some(libc::ESRCH | libc::ENOENT)) => {}
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Every `fwmark MARK lookup TABLE` rule of the shape we add, in `family`.
    pub fn rules(&mut self, family: Family) -> Result<Vec<FwmarkRule>, RouteError> {
        let mut found = Vec::new();
        // `ip rule show`: the kernel has no table filter for rules; there
        // are only a handful.
        self.dump(RTM_GETRULE, family, None, |payload| found.extend(parse_fwmark_rule(payload)))?;
        Ok(found)
    }

    /// Does `family` have `local default dev lo table TABLE`? Only that
    /// table is read (strict checking with a table filter).
    fn has_local_route(&mut self, family: Family, table: u32) -> Result<bool, RouteError> {
        let mut found = false;
        let result = self.dump(RTM_GETROUTE, family, Some(table), |payload| {
            if parse_local_default(payload) == Some((table, true)) {
                found = true;
            }
        });
        match result {
            Ok(()) => Ok(found),
            // The table does not exist (yet).
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Are all rules for `marks` and both local routes in place?
    pub fn present(&mut self, marks: &[u32], table: u32) -> Result<bool, RouteError> {
        if marks.is_empty() {
            // Nothing is installed without tproxies, so nothing can be missing.
            return Ok(true);
        }
        for family in self.families.clone() {
            let existing = self.rules(family)?;
            if !marks.iter().all(|m| existing.iter().any(|r| r.mark == *m && r.table == table))
                || !self.has_local_route(family, table)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A dump request; `table` filters routes in the kernel.
    fn dump(
        &mut self,
        ty: u16,
        family: Family,
        table: Option<u32>,
        each: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        let mut each = each;
        let seq = self.sock.next_seq();
        let mut w = MsgWriter::new();
        let m = w.begin(ty, NLM_F_REQUEST | NLM_F_DUMP, seq);
        // rtmsg / fib_rule_hdr: both 12 bytes, the table at offset 4.
        w.raw(&[family.af(), 0, 0, 0, table.map_or(0, header_table), 0, 0, 0, 0, 0, 0, 0]);
        if let Some(t) = table {
            w.u32ne(RTA_TABLE, t);
        }
        w.end(m);
        let what = match (ty, table) {
            (RTM_GETRULE, _) => format!("{} rule show", family.ip()),
            (_, Some(t)) => format!("{} route show table {t}", family.ip()),
            _ => format!("{} route show", family.ip()),
        };
        self.sock.dump(&w.buf, &what, |_, p| each(p))
    }
}

fn lo_index() -> Result<u32, RouteError> {
    // SAFETY: a NUL-terminated constant name.
    let idx = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if idx == 0 { Err(RouteError::NoLoopback) } else { Ok(idx) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule as the kernel reports it (fib_nl_fill_rule).
    fn rule_msg(flags: u32, action: u8, extra: &[(u16, u32)]) -> Vec<u8> {
        let mut w = MsgWriter::new();
        w.raw(&[libc::AF_INET as u8, 0, 0, 0, 252, 0, 0, action]);
        w.buf.extend_from_slice(&flags.to_ne_bytes());
        w.u32ne(FRA_TABLE, 300);
        w.u32ne(FRA_SUPPRESS_PREFIXLEN, u32::MAX);
        w.u8(FRA_PROTOCOL, 4);
        w.u32ne(FRA_PRIORITY, 32765);
        for &(ty, v) in extra {
            w.u32ne(ty, v);
        }
        w.buf
    }

    #[test]
    fn only_rules_of_our_exact_shape_are_ours() {
        let ours = rule_msg(0, FR_ACT_TO_TBL, &[(FRA_FWMARK, 0xbb8), (FRA_FWMASK, u32::MAX)]);
        assert_eq!(parse_fwmark_rule(&ours), Some(FwmarkRule { mark: 0xbb8, table: 300, priority: 32765 }));
        // `not fwmark 0xbb8 lookup 300`
        assert_eq!(parse_fwmark_rule(&rule_msg(FIB_RULE_INVERT, FR_ACT_TO_TBL, &[(FRA_FWMARK, 0xbb8)])), None);
        // `fwmark 0xbb8/0xff lookup 300`
        assert_eq!(parse_fwmark_rule(&rule_msg(0, FR_ACT_TO_TBL, &[(FRA_FWMARK, 0xbb8), (FRA_FWMASK, 0xff)])), None);
        // `fwmark 0xbb8 blackhole` (action 6)
        assert_eq!(parse_fwmark_rule(&rule_msg(0, 6, &[(FRA_FWMARK, 0xbb8)])), None);
        // `fwmark 0xbb8 oif X lookup 300` (FRA_OIFNAME 17 as any other selector)
        assert_eq!(parse_fwmark_rule(&rule_msg(0, FR_ACT_TO_TBL, &[(FRA_FWMARK, 0xbb8), (17, 0)])), None);
        // `lookup 300` without a mark
        assert_eq!(parse_fwmark_rule(&rule_msg(0, FR_ACT_TO_TBL, &[])), None);
        // `fwmark 0xbb8 lookup 300 suppress_prefixlength 0`
        assert_eq!(
            parse_fwmark_rule(&rule_msg(0, FR_ACT_TO_TBL, &[(FRA_FWMARK, 0xbb8), (FRA_SUPPRESS_PREFIXLEN, 0)])),
            None
        );
        assert_eq!(parse_fwmark_rule(&ours[..10]), None);
    }

    #[test]
    fn local_default_routes_are_recognised_by_table() {
        let mut w = MsgWriter::new();
        w.raw(&[libc::AF_INET6 as u8, 0, 0, 0, RT_TABLE_COMPAT, RTPROT_STATIC, RT_SCOPE_HOST, RTN_LOCAL, 0, 0, 0, 0]);
        w.u32ne(RTA_TABLE, 300);
        assert_eq!(parse_local_default(&w.buf), Some((300, true)));
        w.buf[1] = 64;
        assert_eq!(parse_local_default(&w.buf), Some((300, false)));
    }
}
