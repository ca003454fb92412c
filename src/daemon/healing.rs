//! Self-healing: undo what other programs change in our table, routing and
//! sysctls (as the kernel's notifications report it), and when something
//! fails, degrade (keep the last good kernel state) and retry a full
//! rebuild with a growing backoff.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::error::DaemonError;
use super::running::{Daemon, Trouble, notify};
use crate::cgroup;

/// The first retry after an error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Daemon {
    /// Undo outside changes: routing first, then the whole table. A program
    /// that keeps changing them is answered each time (a few rounds per
    /// wakeup, then the next notification).
    pub fn heal(&mut self) {
        if self.kernel.take_addresses_changed() {
            self.refresh_local_nets();
        }
        let started = Instant::now();
        let (mut table, mut routing) = (false, false);
        for _ in 0..4 {
            if !self.kernel.needs_healing() {
                break;
            }
            if let Some(restored) = self.kernel.heal_routing() {
                routing = true;
                if let Err(e) = restored {
                    self.degrade(format!("restoring policy routing: {e}"));
                }
            }
            if self.kernel.take_heal_table() {
                table = true;
                if let Err(e) = self.kernel.apply_full(&mut self.tracker.ruleset) {
                    self.degrade(format!("restoring table inet cgtproxy: {e}"));
                    break;
                }
            }
        }
        if !table && !routing {
            return;
        }
        let elapsed_us = started.elapsed().as_micros() as u64;
        if table {
            // A full apply rewrites both tables; say so, since either may be
            // the one that was touched.
            let tables = if self.tracker.ruleset.has_bridge_table() {
                "table inet cgtproxy and table bridge cgtproxy"
            } else {
                "table inet cgtproxy"
            };
            warn!(
                elapsed_us,
                "the nftables ruleset was changed by another program; restored {tables} in {elapsed_us} µs"
            );
        }
        if routing {
            warn!(
                elapsed_us,
                "policy routing rules or routes were removed by another program; restored them in {elapsed_us} µs"
            );
        }
        self.state.resyncs += 1;
        self.save_state();
    }

    /// Gateway mode: a network appeared or went (`docker network create`,
    /// an address on the LAN NIC): bring `local-nets` up to date with one
    /// full replace when the set of directly connected prefixes changed.
    fn refresh_local_nets(&mut self) {
        if !self.tracker.ruleset.has_local_sets() {
            return;
        }
        let prefixes = match crate::links::connected() {
            Ok(p) => p,
            Err(e) => return self.degrade(format!("reading this host's addresses for local-nets: {e}")),
        };
        let (old4, old6) = (self.tracker.ruleset.local4.clone(), self.tracker.ruleset.local6.clone());
        self.tracker.ruleset.set_local_nets(&prefixes);
        if self.tracker.ruleset.local4 == old4 && self.tracker.ruleset.local6 == old6 {
            return;
        }
        match self.kernel.update_local_nets(&self.tracker.ruleset) {
            Ok(()) => info!(
                "this host's networks changed: local-nets now holds {} prefixes; forwarding between them is not diverted",
                prefixes.len()
            ),
            Err(e) => self.degrade(format!("updating local-nets: {e}")),
        }
    }

    /// No notification exists for sysctls: in gateway mode's fallback the
    /// br_netfilter sysctls are read back whenever the daemon wakes, and
    /// set to 0 again when another program (Docker) set them to 1.
    pub fn heal_sysctls(&mut self) {
        if self.kernel.gateway.drifted() {
            warn!("bridge-nf-call-iptables/ip6tables were set back to 1 by another program; setting them to 0 again");
            self.kernel.gateway.turn_off();
        }
    }

    /// Log an error, keep the kernel state as it is, and retry a full
    /// rebuild later with a growing backoff. Shown in `status` and STATUS=.
    pub fn degrade(&mut self, what: String) {
        let backoff = self.trouble.as_ref().map_or(FIRST_BACKOFF, |t| (t.backoff * 2).min(MAX_BACKOFF));
        error!(
            retry_in_s = backoff.as_secs(),
            "{what}; keeping the last good kernel state and retrying in {} s",
            backoff.as_secs()
        );
        notify(&[sd_notify::NotifyState::Status(&format!("degraded: {what}"))]);
        self.trouble = Some(Trouble { what, backoff, retry_at: Instant::now() + backoff });
        self.save_state();
    }

    /// The backoff is over: rebuild, or degrade again for longer.
    pub fn retry(&mut self) {
        match self.rebuild() {
            Ok(()) => {
                if let Some(t) = self.trouble.take() {
                    info!(was = %t.what, "recovered from \"{}\": all cgroups classified again", t.what);
                }
                self.guard_check(true);
                self.publish(true);
                notify(&[sd_notify::NotifyState::Status("all cgroups classified")]);
                self.state.resyncs += 1;
                self.save_state();
            }
            Err(e) => self.degrade(e.to_string()),
        }
    }

    /// Watch and scan the whole tree again, then replace the whole table and
    /// routing for the tracker's config.
    pub fn rebuild(&mut self) -> Result<(), DaemonError> {
        if !cgroup::is_cgroup2(&self.root).unwrap_or(false) {
            // An empty mount point would look like a tree without cgroups:
            // classifying nothing would let every app go direct.
            return Err(DaemonError::RootGone(self.root.display().to_string()));
        }
        let all = self.watcher.rewatch_all().map_err(|e| DaemonError::watch(&self.root, e))?;
        self.tracker.reset(&all);
        self.kernel.gateway.allow_off = self.tracker.cfg.gateway_bridge_netfilter_off;
        super::running::warn_too_deep(&all);
        self.kernel.sync(&mut self.tracker.ruleset, self.tracker.cfg.route_table)
    }

    /// [`Daemon::rebuild`] after a failed update; a failure degrades.
    pub fn resync(&mut self) {
        self.state.resyncs += 1;
        match self.rebuild() {
            Ok(()) => {
                self.guard_check(true);
                self.publish(true);
            }
            Err(e) => self.degrade(format!("cannot rebuild the ruleset: {e}")),
        }
        self.save_state();
    }
}
