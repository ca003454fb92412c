//! The running daemon's state ([`Daemon`]) and what every part of it does
//! the same way: send a delta to the kernel, run the proxy-loop guard,
//! write the state file, tell systemd.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::guard::Guard;
use super::kernel::Kernel;
use super::options::ConfigSource;
use super::publish::Publisher;
use super::tracker::{Delta, Tracker};
use super::watch::Watcher;

pub struct Daemon {
    pub source: ConfigSource,
    pub root: PathBuf,
    pub tracker: Tracker,
    /// The table, routing and sysctls this daemon keeps in the kernel.
    pub kernel: Kernel,
    pub watcher: Watcher,
    /// What `cgtproxy status` reads.
    pub state: crate::state::DaemonState,
    /// systemd's watchdog interval, when enabled.
    pub watchdog: Option<Duration>,
    /// Keeps the cgroups of the tproxies' own listeners direct.
    pub guard: Guard,
    /// Fills the user's sets named by `nft-set` rules.
    pub publisher: Publisher,
    /// The last error and when to retry; None when all is well.
    pub trouble: Option<Trouble>,
    /// /proc/self/mountinfo: poll says POLLPRI when the mount table changes,
    /// so an unmounted (or remounted) cgroup root is noticed without a timer
    /// (inotify says nothing while another mount keeps the file system
    /// instance alive).
    pub mounts: Option<std::fs::File>,
}

/// Degraded: an error that a later retry (a full rebuild) may fix. The last
/// good kernel state stays in force meanwhile.
pub struct Trouble {
    pub what: String,
    pub backoff: Duration,
    pub retry_at: Instant,
}

/// Tell systemd; without systemd (or on error) nothing happens.
pub fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}

impl Daemon {
    /// Update and write the state file (a failure is logged, not fatal).
    pub fn save_state(&mut self) {
        self.state.cgroups = self.tracker.paths.len();
        self.state.elements = self.tracker.ruleset.elements.len();
        self.state.strict = self.tracker.cfg.strict;
        self.state.config = self.tracker.cfg.origin.clone();
        self.state.guard = self.guard.findings.clone();
        self.state.gateway_bridge = self.kernel.gateway.bridge_status();
        self.state.degraded = self.trouble.as_ref().map(|t| t.what.clone());
        self.state.published = self.publisher.lines();
        self.state.tails.clone_from(&self.tracker.ruleset.tails.list);
        if let Err(e) = crate::state::write(&self.state) {
            warn!(path = %crate::state::path().display(), "cannot write the state file: {e}");
        }
    }

    /// Run the proxy-loop guard and send what it changes; `full` after a
    /// start, reload or rebuild.
    pub fn guard_check(&mut self, full: bool) {
        let before = self.guard.findings.clone();
        let started = Instant::now();
        let delta = self.guard.check(&mut self.tracker, full);
        debug!(elapsed_us = started.elapsed().as_micros() as u64, full, "proxy-loop guard checked");
        if !delta.is_empty() {
            self.commit(&delta);
        }
        if self.guard.findings != before {
            self.save_state();
        }
    }

    /// Bring the sets of `nft-set` rules in line with the classification;
    /// `full` reads each back (after a start, reload or rebuild, or when the
    /// kernel reported one changed by someone else).
    pub fn publish(&mut self, full: bool) {
        let want = crate::ruleset::publish::published(
            &self.tracker.cfg,
            &self.tracker.ruleset.elements,
            &self.tracker.ruleset.tails,
        );
        if want.is_empty() && self.publisher.is_idle() {
            // No `nft-set` rule: nothing on the reaction path.
            return;
        }
        let before = self.publisher.lines();
        // Only a read-back needs the ids of the cgroups that exist.
        let live: std::collections::BTreeSet<u64> = if full || self.publisher.has_stale() {
            self.tracker.paths.values().copied().collect()
        } else {
            Default::default()
        };
        if full {
            self.publisher.sync_all(&want, &live);
        } else {
            self.publisher.update(&want, &live);
        }
        if self.publisher.lines() != before {
            self.save_state();
        }
    }

    /// Send a delta as one batch; on any failure resynchronise everything.
    pub fn commit(&mut self, delta: &Delta) {
        for path in &delta.too_deep {
            warn_deep(path);
        }
        if delta.nothing_to_send() {
            return;
        }
        let started = Instant::now();
        match self.kernel.commit(delta, &mut self.tracker.ruleset) {
            Ok(()) if delta.add.len() <= 64 => {
                for (_, e, path) in delta.add.iter().filter(|(_, e, _)| e.verdict != crate::ruleset::Verdict::Continue)
                {
                    let target = e.verdict.describe(&self.tracker.cfg);
                    // Only the proxy-loop guard adds a non-strict element without a rule.
                    let rule = e.rule.map_or_else(|| "proxy-loop guard".to_owned(), |r| format!("rule {r}"));
                    let path = crate::cgname::escape(path);
                    info!(
                        cgroup = %path,
                        rule = e.rule.map(|r| r as i64).unwrap_or(-1),
                        target = %target,
                        "classified {}: {target} ({rule})",
                        path
                    );
                }
                debug!(
                    added = delta.add.len(),
                    deleted = delta.del.len(),
                    "applied: {} elements added, {} deleted",
                    delta.add.len(),
                    delta.del.len()
                );
            }
            Ok(()) => info!(
                added = delta.add.len(),
                deleted = delta.del.len(),
                levels = ?delta.new_levels,
                elapsed_us = started.elapsed().as_micros() as u64,
                "applied: {} elements added, {} deleted, new levels {:?}, {} µs",
                delta.add.len(),
                delta.del.len(),
                delta.new_levels,
                started.elapsed().as_micros()
            ),
            Err(e) => {
                warn!("incremental update failed ({e}); rebuilding the whole table");
                self.resync();
                return;
            }
        }
        // Asked after the commit: a process that enters later finds the
        // element in place (daemon/fresh.rs).
        if !delta.bump
            && self.tracker.ruleset.flow_mask != 0
            && let Some(path) = super::fresh::populated(&self.root, &delta.fresh)
        {
            let path = crate::cgname::escape(path);
            if let Err(e) = self.kernel.new_generation(&mut self.tracker.ruleset) {
                warn!("new flow-cache generation failed ({e}); rebuilding the whole table");
                self.resync();
                return;
            }
            debug!(
                cgroup = %path,
                "new flow-cache generation: the new cgroup {path} already had processes, whose flows may be cached \
                 with its parent's class"
            );
        }
        // A new tail (a new combination of conditional rules) is rare: the
        // state file names it for `print --diff`.
        if self.tracker.ruleset.tails.list.len() != self.state.tails.len() {
            self.save_state();
        }
        self.publish(false);
    }
}

/// One warning per cgroup of `cgroups` too deep for `socket cgroupv2`.
pub fn warn_too_deep(cgroups: &[crate::cgroup::Cgroup]) {
    for c in cgroups.iter().filter(|c| c.level > crate::names::MAX_SOCKET_LEVEL) {
        warn_deep(&c.path);
    }
}

fn warn_deep(path: &str) {
    let max = crate::names::MAX_SOCKET_LEVEL;
    warn!(
        cgroup = %path,
        "cgroup {path} is deeper than level {max} (the kernel's socket cgroupv2 limit): its sockets take the \
         verdict of its ancestor at level {max}"
    );
}
