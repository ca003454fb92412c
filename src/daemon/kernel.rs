//! What the daemon has put in the kernel, and the one way to take it out:
//! table inet cgtproxy (and gateway mode's table bridge cgtproxy), the
//! policy routing, the br_netfilter sysctls (through [`Gateway`]), and the
//! bookkeeping of our own changes that tells them from everyone else's
//! (rule handles, generation, what needs healing). [`teardown`] removes it
//! all, on the daemon's exit and for `cgtproxy cleanup` alike.

use std::borrow::BorrowMut;
use std::collections::BTreeMap;

use tracing::warn;

use super::error::DaemonError;
use super::events::{KernelEvents, Own};
use super::gateway::Gateway;
use super::tracker::Delta;
use crate::config::Config;
use crate::names::CHAIN_CLASSIFY;
use crate::nft::{Nft, NftError, encode};
use crate::route::{RouteError, Routes};
use crate::ruleset::Ruleset;

pub struct Kernel {
    nft: Nft,
    routes: Routes,
    events: KernelEvents,
    /// Netlink ports of our request sockets: notifications carrying them
    /// are our own changes.
    nft_port: u32,
    route_port: u32,
    /// Rule handles of the `socket cgroupv2 level N` rules, kept from our
    /// own rule notifications.
    handles: BTreeMap<u32, u64>,
    /// The last nftables generation id seen, and our commits since: after
    /// lost notifications, `GETGEN == generation + own_commits` says nobody
    /// else committed (a cheap cross-check instead of a dump).
    generation: u32,
    own_commits: u32,
    /// The flow cache's generation last sent. It starts from the kernel's
    /// generation id, which only grows in a network namespace, so a
    /// restarted daemon does not reuse the tokens of the previous one.
    epoch: u32,
    /// Tails (conditional rules) the kernel holds: their chains and `tails` elements.
    tails_sent: usize,
    /// Outside changes still to be undone.
    heal_table: bool,
    /// An address notification came: `local-nets` may be stale.
    addresses_changed: bool,
    heal_routing: bool,
    /// Marks and table whose routing is installed.
    routed: (Vec<u32>, u32),
    /// Gateway mode outside the table: broute support, br_netfilter sysctls.
    pub gateway: Gateway,
    /// Other tables' sets that changed, as (family, table, set, port): for
    /// the sets classification is published to.
    set_notices: Vec<(u8, String, String, u32)>,
}

impl Kernel {
    /// Open the request sockets and subscribe to the notifications; nothing
    /// is changed yet.
    pub fn open() -> Result<Self, DaemonError> {
        let nft = Nft::open()?;
        let routes = Routes::open()?;
        // Subscribed before the first commit, so its notifications are seen.
        let events = KernelEvents::open().map_err(DaemonError::Events)?;
        let nft_port = nft.port_id().map_err(DaemonError::Events)?;
        let route_port = routes.port_id().map_err(DaemonError::Events)?;
        if !routes.ipv6() {
            warn!(
                "IPv6 is disabled here (ipv6.disable=1 or disable_ipv6 on lo): installing IPv4 policy routing only; \
                 the nftables table still covers both families"
            );
        }
        let mut k = Kernel {
            nft,
            routes,
            events,
            nft_port,
            route_port,
            handles: BTreeMap::new(),
            generation: 0,
            own_commits: 0,
            epoch: 0,
            tails_sent: 0,
            heal_table: false,
            addresses_changed: false,
            heal_routing: false,
            routed: (Vec::new(), 0),
            gateway: Default::default(),
            set_notices: Vec::new(),
        };
        // The generation before our first commit: if notifications of a large
        // first commit overrun the socket, GETGEN == this + 1 shows that only
        // we committed (no second full apply).
        k.generation = k.nft.generation().unwrap_or(0);
        k.epoch = k.generation;
        Ok(k)
    }

    /// The notification sockets the event loop polls: nf_tables, routing.
    pub fn event_fds(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        (self.events.nft_fd(), self.events.route_fd())
    }

    /// Routing, then the whole table in one batch (routes first: a mark
    /// without its route would send packets out directly).
    pub fn sync(&mut self, rs: &mut Ruleset, table: u32) -> Result<(), DaemonError> {
        let marks: Vec<u32> = rs.marks().collect();
        if let Err(e) = self.events.filter_routes(table) {
            warn!(
                "cannot attach the route notification filter ({e}); other tables' route changes will wake the daemon"
            );
        }
        self.routes.install(&marks, table)?;
        self.events.dynamic_sets = rs.dynamic_sets.iter().flat_map(|n| crate::names::dynamic_sets(n)).collect();
        self.gateway.prepare(&mut self.nft, rs);
        if let Err(e) = self.apply_full(rs) {
            // The old table is still in force (the batch changed nothing):
            // drop the routing only the new config would have used.
            let routed = self.routed.clone();
            self.remove_routing_except((&marks, table), (&routed.0, routed.1), "undoing routing after a failed apply");
            return Err(e);
        }
        self.gateway.sync(&mut self.nft, rs);
        let (old_marks, old_table) = std::mem::replace(&mut self.routed, (marks.clone(), table));
        self.remove_routing_except((&old_marks, old_table), (&marks, table), "removing routing of the previous config");
        Ok(())
    }

    /// Replace the whole table with `rs`, atomically, and take the new rule
    /// handles from our own notifications.
    pub fn apply_full(&mut self, rs: &mut Ruleset) -> Result<(), DaemonError> {
        // A new generation: flows cached under the old table are classified again.
        self.epoch = self.epoch.wrapping_add(1);
        rs.flow_epoch = self.epoch;
        self.nft.apply_full(rs)?;
        self.tails_sent = rs.tails.list.len();
        self.own_commits = self.own_commits.wrapping_add(1);
        self.absorb();
        Ok(())
    }

    /// Send `delta` (with the level rules of `rs` it adds) as one batch;
    /// the handles of new level rules and the generation come back as our
    /// own notifications, read from the local queue (no request to the
    /// kernel after the commit).
    pub fn commit(&mut self, delta: &Delta, rs: &mut Ruleset) -> Result<(), DaemonError> {
        let ids = encode::SetIds::default();
        let mut b = self.nft.batch();
        let mut levels = delta.new_levels.clone();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        for level in &levels {
            // Deepest first: a new level goes right before the deepest
            // existing level shallower than it, or at the end.
            let before = self.handles.range(..*level).next_back().map(|(_, h)| *h);
            for stmt in rs.level_rules(*level) {
                encode::rule(&mut b, CHAIN_CLASSIFY, &stmt, &ids, before);
            }
        }
        // A cgroup with a new rule tail: its chain and dispatch element first.
        encode::new_tails(&mut b, rs, self.tails_sent, None, true);
        encode::delete_cgroup_elements(&mut b, &delta.del);
        encode::cgroup_elements(&mut b, delta.add.iter().map(|(id, e, _)| (id, e)), None);
        let epoch = rs.flow_epoch;
        if delta.bump && rs.flow_mask != 0 {
            self.epoch = self.epoch.wrapping_add(1);
            rs.flow_epoch = self.epoch;
            encode::flow_elements(&mut b, rs, (None, None, None), true);
        }
        if let Err(e) = self.nft.commit(b) {
            rs.flow_epoch = epoch;
            return Err(e.into());
        }
        self.tails_sent = rs.tails.list.len();
        self.own_commits = self.own_commits.wrapping_add(1);
        if !levels.is_empty() {
            self.absorb();
        }
        Ok(())
    }

    /// A new flow-cache generation alone (`flush map` and the new tokens of
    /// `flow-class`, `flow-token`, `flow-verdict`): flows cached before are
    /// classified again on their next packet.
    pub fn new_generation(&mut self, rs: &mut Ruleset) -> Result<(), DaemonError> {
        if rs.flow_mask == 0 {
            return Ok(());
        }
        let epoch = rs.flow_epoch;
        self.epoch = self.epoch.wrapping_add(1);
        rs.flow_epoch = self.epoch;
        let mut b = self.nft.batch();
        encode::flow_elements(&mut b, rs, (None, None, None), true);
        if let Err(e) = self.nft.commit(b) {
            rs.flow_epoch = epoch;
            return Err(e.into());
        }
        self.own_commits = self.own_commits.wrapping_add(1);
        Ok(())
    }

    /// Remove the routing of `(marks, table)` that `(keep, keep_table)`
    /// does not also use; errors are logged with `why`.
    fn remove_routing_except(&mut self, (marks, table): (&[u32], u32), (keep, keep_table): (&[u32], u32), why: &str) {
        let unused: Vec<u32> = marks.iter().copied().filter(|m| table != keep_table || !keep.contains(m)).collect();
        let mut errors = self.routes.remove_rules(&unused, table);
        if !marks.is_empty() && (table != keep_table || keep.is_empty()) {
            errors.extend(self.routes.remove_local_routes(table));
        }
        for e in errors {
            warn!("{why}: {e}");
        }
    }

    /// Read the kernel notifications queued now: keep our own rule handles
    /// and generation, and note outside changes for the healing.
    pub fn absorb(&mut self) {
        let seen = self.events.read(self.nft_port, self.route_port, &self.routed.0, self.routed.1);
        if seen.overrun {
            self.cross_check();
        } else {
            for own in &seen.own {
                match *own {
                    Own::TableDeleted => self.handles.clear(),
                    Own::LevelRule(level, handle) => {
                        self.handles.entry(level).or_insert(handle);
                    }
                    Own::RuleDeleted(h) => self.handles.retain(|_, v| *v != h),
                }
            }
            if let Some(g) = seen.generation {
                self.generation = g;
                self.own_commits = 0;
            }
        }
        self.heal_table |= seen.outside_table;
        self.heal_routing |= seen.outside_routing;
        // Lost notifications may have been address changes too.
        self.addresses_changed |= seen.addresses || seen.overrun;
        self.set_notices.extend(seen.foreign_sets);
    }

    /// The changes to other tables' sets seen since the last call.
    pub fn take_set_notices(&mut self) -> Vec<(u8, String, String, u32)> {
        std::mem::take(&mut self.set_notices)
    }

    /// Gateway mode's `local-nets` sets to `rs`'s (one small batch).
    pub fn update_local_nets(&mut self, rs: &Ruleset) -> Result<(), DaemonError> {
        self.nft.update_local_nets(rs)?;
        self.own_commits = self.own_commits.wrapping_add(1);
        self.absorb();
        Ok(())
    }

    /// Did this host's addresses change since the last call?
    pub fn take_addresses_changed(&mut self) -> bool {
        std::mem::take(&mut self.addresses_changed)
    }

    /// Notifications were lost: read the rule handles again and compare the
    /// generation with ours; if someone else committed meanwhile, restore.
    fn cross_check(&mut self) {
        warn!("kernel notifications were lost (ENOBUFS); checking table inet cgtproxy and the routing");
        match (self.nft.level_handles(), self.nft.generation()) {
            (Ok(h), Ok(g)) => {
                self.handles = h;
                if g != self.generation.wrapping_add(self.own_commits) {
                    self.heal_table = true;
                }
                self.generation = g;
                self.own_commits = 0;
            }
            _ => self.heal_table = true,
        }
        self.heal_routing = true;
    }

    /// Has another program changed the table or our routing since?
    pub fn needs_healing(&self) -> bool {
        self.heal_table || self.heal_routing || self.addresses_changed
    }

    /// Whether the table is to be restored (the flag is cleared).
    pub fn take_heal_table(&mut self) -> bool {
        std::mem::take(&mut self.heal_table)
    }

    /// If routing changes were seen (the flag is cleared) and our routing
    /// is no longer all there, install it again; None when nothing was
    /// missing.
    pub fn heal_routing(&mut self) -> Option<Result<(), RouteError>> {
        if !std::mem::take(&mut self.heal_routing) {
            return None;
        }
        let (marks, table) = &self.routed;
        if self.routes.present(marks, *table).unwrap_or(false) {
            return None;
        }
        Some(self.routes.install(marks, *table))
    }

    /// Remove the tables, the sysctl changes and the routing; every error
    /// is collected.
    pub fn teardown(&mut self) -> Vec<DaemonError> {
        let routed = std::mem::take(&mut self.routed);
        teardown(Ok(&mut self.nft), &mut self.gateway, Ok(&mut self.routes), routed).1
    }
}

/// Remove what a daemon left (`cgtproxy cleanup`): the tables, the routing
/// `cfg` uses, and the sysctls a stopped or killed daemon left at 0 in this
/// network namespace (its journal says what to put back; what cannot be
/// put back stays in it). Every error is collected; Ok says whether table
/// inet cgtproxy was there.
pub fn cleanup(cfg: &Config) -> Result<bool, DaemonError> {
    let marks: Vec<u32> = cfg.tproxies.values().map(|t| t.mark).collect();
    let (removed, errors) = teardown(Nft::open(), &mut Gateway::default(), Routes::open(), (marks, cfg.route_table));
    if errors.is_empty() { Ok(removed) } else { Err(DaemonError::Cleanup(errors)) }
}

/// The one teardown, for the daemon's own sockets or ones `cgtproxy
/// cleanup` just opened (which may have failed to open): both tables, then
/// the sysctls, then the routing of `(marks, table)`. A failing step does
/// not stop the others: every error is collected, in that order. Returns
/// whether table inet cgtproxy was there, and the errors.
fn teardown(
    nft: Result<impl BorrowMut<Nft>, NftError>,
    gateway: &mut Gateway,
    routes: Result<impl BorrowMut<Routes>, RouteError>,
    (marks, table): (Vec<u32>, u32),
) -> (bool, Vec<DaemonError>) {
    let mut errors = Vec::new();
    let mut removed = false;
    match nft {
        Ok(mut nft) => {
            match nft.borrow_mut().delete_table() {
                Ok(r) => removed = r,
                Err(e) => errors.push(e.into()),
            }
            if let Err(e) = nft.borrow_mut().delete_bridge_table() {
                errors.push(e.into());
            }
        }
        Err(e) => errors.push(e.into()),
    }
    errors.extend(gateway.restore().into_iter().map(DaemonError::Gateway));
    match routes {
        Ok(mut r) => errors.extend(r.borrow_mut().remove(&marks, table).into_iter().map(DaemonError::from)),
        Err(e) => errors.push(e.into()),
    }
    (removed, errors)
}
