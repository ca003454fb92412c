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

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
const FR_ACT_TO_TBL: u8 = 1;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
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

/// An rtnetlink connection in the current network namespace.
#[derive(Debug)]
pub struct Routes {
    sock: NlSocket,
}

impl Routes {
    pub fn open() -> Result<Self, RouteError> {
        Ok(Routes { sock: NlSocket::open(libc::NETLINK_ROUTE).map_err(RouteError::Open)? })
    }

    fn send(&mut self, ty: u16, flags: u16, what: &str, body: impl FnOnce(&mut MsgWriter)) -> Result<(), NetlinkError> {
        let seq = self.sock.next_seq();
        let mut w = MsgWriter::new();
        let m = w.begin(ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        body(&mut w);
        w.end(m);
        self.sock.request(&w.buf, seq, what)
    }

    /// `ip rule add|del fwmark MARK lookup TABLE`
    fn rule(&mut self, add: bool, family: Family, mark: u32, table: u32) -> Result<(), NetlinkError> {
        let verb = if add { "add" } else { "del" };
        let what = format!("{} rule {verb} fwmark {mark:#x} lookup {table}", family.ip());
        let (ty, flags) = if add { (RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL) } else { (RTM_DELRULE, 0) };
        self.send(ty, flags, &what, |w| {
            // struct fib_rule_hdr: family, dst_len, src_len, tos, table,
            // res1, res2, action; u32 flags.
            w.raw(&[family.af(), 0, 0, 0, header_table(table), 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0]);
            w.u32ne(FRA_FWMARK, mark);
            w.u32ne(FRA_TABLE, table);
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
                    Some(mark) => self.rule(false, family, mark, table).map_err(RouteError::from),
                    None => self.local_route(false, family, table),
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
        for family in Family::BOTH {
            if !self.has_local_route(family, table)? {
                self.local_route(true, family, table)?;
                added.push((family, None));
            }
            let existing = self.rule_marks(family, table)?;
            for &mark in marks.iter().filter(|m| !existing.contains(m)) {
                self.rule(true, family, mark, table)?;
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

    /// `ip rule del fwmark MARK lookup TABLE` for each mark, both families.
    pub fn remove_rules(&mut self, marks: &[u32], table: u32) -> Vec<RouteError> {
        let mut errors = Vec::new();
        for family in Family::BOTH {
            for &mark in marks {
                // Repeat: an older instance may have added duplicates.
                for _ in 0..16 {
                    match self.rule(false, family, mark, table) {
                        Ok(()) => continue,
                        Err(e) if e.errno() == Some(libc::ENOENT) => break,
                        Err(e) => {
                            errors.push(e.into());
                            break;
                        }
                    }
                }
            }
        }
        errors
    }

    /// `ip route del local default dev lo table TABLE`, both families.
    pub fn remove_local_routes(&mut self, table: u32) -> Vec<RouteError> {
        let mut errors = Vec::new();
        for family in Family::BOTH {
            match self.local_route(false, family, table) {
                Ok(()) => {}
                // ESRCH or ENOENT: it was not there.
                Err(RouteError::Netlink(e)) if matches!(e.errno(), Some(libc::ESRCH | libc::ENOENT)) => {}
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Marks that have a `fwmark MARK lookup TABLE` rule in `family`.
    fn rule_marks(&mut self, family: Family, table: u32) -> Result<Vec<u32>, RouteError> {
        let mut found = Vec::new();
        self.dump(RTM_GETRULE, family, |payload| {
            let (mut mark, mut t) = (None, payload.get(4).map(|&x| u32::from(x)));
            for (ty, v) in attrs(payload.get(12..).unwrap_or_default()) {
                match (ty, <[u8; 4]>::try_from(v)) {
                    (FRA_FWMARK, Ok(b)) => mark = Some(u32::from_ne_bytes(b)),
                    (FRA_TABLE, Ok(b)) => t = Some(u32::from_ne_bytes(b)),
                    _ => {}
                }
            }
            if let (Some(m), Some(t)) = (mark, t)
                && t == table
            {
                found.push(m);
            }
        })?;
        Ok(found)
    }

    /// Does `family` have `local default dev lo table TABLE`?
    fn has_local_route(&mut self, family: Family, table: u32) -> Result<bool, RouteError> {
        let mut found = false;
        self.dump(RTM_GETROUTE, family, |payload| {
            let mut t = payload.get(4).map(|&x| u32::from(x));
            for (ty, v) in attrs(payload.get(12..).unwrap_or_default()) {
                if let (RTA_TABLE, Ok(b)) = (ty, <[u8; 4]>::try_from(v)) {
                    t = Some(u32::from_ne_bytes(b));
                }
            }
            // dst_len 0 and type local: `local default`.
            if t == Some(table) && payload.get(1) == Some(&0) && payload.get(7) == Some(&RTN_LOCAL) {
                found = true;
            }
        })?;
        Ok(found)
    }

    /// Are all rules for `marks` and both local routes in place?
    pub fn present(&mut self, marks: &[u32], table: u32) -> Result<bool, RouteError> {
        if marks.is_empty() {
            // Nothing is installed without tproxies, so nothing can be missing.
            return Ok(true);
        }
        for family in Family::BOTH {
            let existing = self.rule_marks(family, table)?;
            if !marks.iter().all(|m| existing.contains(m)) || !self.has_local_route(family, table)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn dump(&mut self, ty: u16, family: Family, each: impl FnMut(&[u8])) -> Result<(), NetlinkError> {
        let mut each = each;
        let seq = self.sock.next_seq();
        let mut w = MsgWriter::new();
        let m = w.begin(ty, NLM_F_REQUEST | NLM_F_DUMP, seq);
        w.raw(&[family.af(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.end(m);
        self.sock.dump(&w.buf, "dump routing", |_, p| each(p))
    }
}

fn lo_index() -> Result<u32, RouteError> {
    // SAFETY: a NUL-terminated constant name.
    let idx = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if idx == 0 { Err(RouteError::NoLoopback) } else { Ok(idx) }
}
