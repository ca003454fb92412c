//! The running daemon: startup, the event loop, self-healing, reload and
//! cleanup. All kernel and filesystem I/O of `cgtproxy` run lives here; the
//! decisions are made by [`tracker::Tracker`] and [`crate::ruleset`].

pub mod gateway;
mod guard;
mod signals;
pub mod tracker;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::cgroup::{self, CgroupError};
use crate::config::{Config, ConfigError};
use crate::nft::{Nft, NftError, encode};
use crate::route::{RouteError, Routes};
use crate::ruleset::CHAIN_CLASSIFY;
use signals::{Signal, Signals};
use tracker::{Delta, Tracker};
use watch::{Change, Watcher};

/// How often the kernel state is checked for outside changes.
const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("watching cgroups below {root}: {source}")]
    Watch {
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("cleanup failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Cleanup(Vec<DaemonError>),
}

/// Where the configuration comes from, for start and reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Given with -c: a missing file is an error, not the built-in default.
    pub explicit: bool,
}

impl ConfigSource {
    /// Load the config; a missing default file means the built-in default.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match Config::load(&self.path) {
            Err(ConfigError::Read { source, .. })
                if !self.explicit && source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn!(path = %self.path.display(), "config file {} not found; using the built-in default (everything direct)", self.path.display());
                Ok(Config::builtin_default())
            }
            other => other,
        }
    }
}

struct Daemon {
    source: ConfigSource,
    root: PathBuf,
    tracker: Tracker,
    nft: Nft,
    routes: Routes,
    watcher: Watcher,
    /// Rule handles of the `socket cgroupv2 level N` rules.
    handles: BTreeMap<u32, u64>,
    /// Ruleset generation after our last commit; another means someone else
    /// changed the ruleset.
    generation: u32,
    /// Marks and table whose routing is installed.
    routed: (Vec<u32>, u32),
    /// What `cgtproxy status` reads.
    state: crate::state::DaemonState,
    /// systemd's watchdog interval, when enabled.
    watchdog: Option<Duration>,
    /// Keeps the cgroups of the tproxies' own listeners direct.
    guard: guard::Guard,
    /// Gateway mode outside the table: broute support, br_netfilter sysctls.
    gateway: gateway::Gateway,
}

/// Run until SIGTERM/SIGINT; everything added is removed before returning.
pub fn run(source: ConfigSource) -> Result<(), DaemonError> {
    // Signals first, so a SIGTERM during startup still leads to cleanup.
    let signals = Signals::new().map_err(DaemonError::Signals)?;
    let cfg = source.load()?;
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let started = Instant::now();
    let mut watcher = Watcher::new(&root).map_err(|e| watch_error(&root, e))?;
    let cgroups = watcher.rewatch_all().map_err(|e| watch_error(&root, e))?;
    let tracker = Tracker::new(cfg, &cgroups);
    // The tracker holds what it needs; the scan list would stay alive for
    // the daemon's lifetime otherwise.
    drop(cgroups);
    let mut d = Daemon {
        source,
        root,
        tracker,
        nft: Nft::open()?,
        routes: Routes::open()?,
        watcher,
        handles: BTreeMap::new(),
        generation: 0,
        routed: (Vec::new(), 0),
        state: Default::default(),
        watchdog: sd_notify::watchdog_enabled(),
        guard: guard::Guard::new(),
        gateway: Default::default(),
    };
    if let Err(e) = d.sync_all() {
        let cleanup = d.cleanup();
        if !cleanup.is_empty() {
            error!("{}", DaemonError::Cleanup(cleanup));
        }
        return Err(e);
    }
    info!(
        config = %d.tracker.cfg.origin,
        cgroup_root = %d.root.display(),
        cgroups = d.tracker.paths.len(),
        elements = d.tracker.ruleset.elements.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ready: all cgroups classified ({} cgroups below {}, {} map elements, config {}, {:.1} ms)",
        d.tracker.paths.len(),
        d.root.display(),
        d.tracker.ruleset.elements.len(),
        d.tracker.cfg.origin,
        started.elapsed().as_secs_f64() * 1000.0
    );
    d.state = crate::state::DaemonState {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        config: d.tracker.cfg.origin.clone(),
        cgroup_root: d.root.display().to_string(),
        started: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0),
        startup_ms: started.elapsed().as_secs_f64() * 1000.0,
        netns: crate::inspect::own_netns().unwrap_or(0),
        ..Default::default()
    };
    d.guard_check(true);
    d.save_state();
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("all cgroups classified")]);
    let result = d.event_loop(&signals);
    let errors = d.cleanup();
    crate::state::remove();
    match (result, errors.is_empty()) {
        (Err(e), _) => Err(e),
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => Err(DaemonError::Cleanup(errors)),
    }
}

fn watch_error(root: &Path, source: std::io::Error) -> DaemonError {
    DaemonError::Watch { root: root.display().to_string(), source }
}

fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}

impl Daemon {
    /// Update and write the state file (a failure is logged, not fatal).
    fn save_state(&mut self) {
        self.state.cgroups = self.tracker.paths.len();
        self.state.elements = self.tracker.ruleset.elements.len();
        self.state.strict = self.tracker.cfg.strict;
        self.state.config = self.tracker.cfg.origin.clone();
        self.state.guard = self.guard.findings.clone();
        self.state.gateway_bridge = match self.gateway.mode {
            Some(m) if m != gateway::BridgeMode::None => m.to_string(),
            _ => String::new(),
        };
        if let Err(e) = crate::state::write(&self.state) {
            warn!(path = %crate::state::path().display(), "cannot write the state file: {e}");
        }
    }

    /// Routing, then the whole table in one batch (routes first: a mark
    /// without its route would send packets out directly).
    fn sync_all(&mut self) -> Result<(), DaemonError> {
        let marks: Vec<u32> = self.tracker.ruleset.marks().collect();
        let table = self.tracker.cfg.route_table;
        self.routes.install(&marks, table)?;
        self.gateway.prepare(&mut self.nft, &mut self.tracker.ruleset);
        if let Err(e) = self.nft.apply_full(&self.tracker.ruleset) {
            // The old table is still in force (the batch changed nothing):
            // drop the routing only the new config would have used.
            let routed = self.routed.clone();
            self.remove_routing_except((&marks, table), (&routed.0, routed.1), "undoing routing after a failed apply");
            return Err(e.into());
        }
        self.gateway.sync(&mut self.nft, &self.tracker.ruleset);
        self.handles = self.nft.level_handles()?;
        self.generation = self.nft.generation()?;
        let (old_marks, old_table) = std::mem::replace(&mut self.routed, (marks.clone(), table));
        self.remove_routing_except((&old_marks, old_table), (&marks, table), "removing routing of the previous config");
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

    fn event_loop(&mut self, signals: &Signals) -> Result<(), DaemonError> {
        let mut next_check = Instant::now() + HEALTH_INTERVAL;
        let mut next_ping = Instant::now();
        let mut ticks: u64 = 0;
        loop {
            if let Some(interval) = self.watchdog
                && Instant::now() >= next_ping
            {
                notify(&[sd_notify::NotifyState::Watchdog]);
                next_ping = Instant::now() + interval / 2;
            }
            let wake = if self.watchdog.is_some() { next_check.min(next_ping) } else { next_check };
            let timeout = wake.saturating_duration_since(Instant::now());
            let mut fds = [
                libc::pollfd { fd: signals.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.watcher.fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds.
            // Round up: a timeout rounded down to 0 ms would spin.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_micros().div_ceil(1000) as i32) };
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(DaemonError::Signals(std::io::Error::last_os_error()));
            }
            if fds[0].revents != 0 {
                for s in signals.read() {
                    match s {
                        Signal::Terminate(n) => {
                            info!(signal = n, "stopping on signal {n}: removing table, rules and routes");
                            notify(&[sd_notify::NotifyState::Stopping]);
                            return Ok(());
                        }
                        Signal::Reload => self.reload(),
                    }
                }
            }
            if fds[1].revents != 0 {
                self.on_cgroup_events()?;
            }
            if Instant::now() >= next_check {
                let started = Instant::now();
                ticks += 1;
                if self.watcher.degraded && ticks.is_multiple_of(4) {
                    self.rescan_unwatched();
                }
                self.health_check();
                debug!(elapsed_us = started.elapsed().as_micros() as u64, "health check");
                next_check = Instant::now() + HEALTH_INTERVAL;
            }
        }
    }

    fn on_cgroup_events(&mut self) -> Result<(), DaemonError> {
        let changes = self.watcher.read().map_err(|e| watch_error(&self.root, e))?;
        let mut delta = Delta::default();
        let mut rescan = false;
        for c in changes {
            match c {
                Change::Appeared(cgs) => delta.merge(self.tracker.appeared(&cgs)),
                Change::Vanished(path) => delta.merge(self.tracker.vanished(&path)),
                Change::Rescan => rescan = true,
            }
        }
        if rescan {
            warn!("inotify queue overflowed or a cgroup was renamed: rescanning the whole tree");
            let all = self.watcher.rewatch_all().map_err(|e| watch_error(&self.root, e))?;
            delta.merge(self.tracker.reconcile(&all));
        }
        if !delta.is_empty() {
            self.commit(&delta);
        }
        self.guard_check(false);
        Ok(())
    }

    /// Run the proxy-loop guard and send what it changes; `full` after a
    /// start, reload or rebuild.
    fn guard_check(&mut self, full: bool) {
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

    /// Send a delta as one batch; on any failure resynchronise everything.
    fn commit(&mut self, delta: &Delta) {
        let started = Instant::now();
        match self.try_commit(delta) {
            Ok(()) if delta.add.len() <= 64 => {
                for (_, e) in delta.add.iter().filter(|(_, e)| e.verdict != crate::ruleset::Verdict::Continue) {
                    let target = crate::inspect::describe(e.verdict, &self.tracker.cfg);
                    // Only the proxy-loop guard adds a non-strict element without a rule.
                    let rule = e.rule.map_or_else(|| "proxy-loop guard".to_owned(), |r| format!("rule {r}"));
                    info!(
                        cgroup = %e.path,
                        rule = e.rule.map(|r| r as i64).unwrap_or(-1),
                        target = %target,
                        "classified {}: {target} ({rule})",
                        e.path
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
            }
        }
    }

    fn try_commit(&mut self, delta: &Delta) -> Result<(), DaemonError> {
        let ids = encode::SetIds::default();
        let mut b = self.nft.batch();
        let mut levels = delta.new_levels.clone();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        for level in &levels {
            // Deepest first: a new level goes right before the deepest
            // existing level shallower than it, or at the end.
            let before = self.handles.range(..*level).next_back().map(|(_, h)| *h);
            for stmt in self.tracker.ruleset.level_rules(*level) {
                encode::rule(&mut b, CHAIN_CLASSIFY, &stmt, &ids, before);
            }
        }
        encode::delete_cgroup_elements(&mut b, &delta.del);
        encode::cgroup_elements(&mut b, delta.add.iter().map(|(id, e)| (id, e)), None);
        self.nft.commit(b)?;
        if !levels.is_empty() {
            self.handles = self.nft.level_handles()?;
        }
        self.generation = self.nft.generation()?;
        Ok(())
    }

    /// Degraded mode (not every directory watched): scan the tree and
    /// send what changed.
    fn rescan_unwatched(&mut self) {
        match self.watcher.rewatch_all() {
            Ok(all) => {
                let delta = self.tracker.reconcile(&all);
                if !delta.is_empty() {
                    self.commit(&delta);
                }
            }
            Err(e) => warn!("rescan of {}: {e}", self.root.display()),
        }
    }

    /// Watch and scan the whole tree again, then replace the whole table and
    /// routing for the tracker's config.
    fn rebuild(&mut self) -> Result<(), DaemonError> {
        let all = self.watcher.rewatch_all().map_err(|e| watch_error(&self.root, e))?;
        self.tracker.reset(&all);
        self.sync_all()
    }

    /// [`Daemon::rebuild`] after an outside change or a failed update.
    fn resync(&mut self) {
        self.state.resyncs += 1;
        if let Err(e) = self.rebuild() {
            error!("cannot restore the ruleset: {e}");
        }
        self.guard_check(true);
        self.save_state();
    }

    /// Notice outside changes (`nft flush ruleset`, a firewall reload, a
    /// deleted ip rule) and restore everything.
    fn health_check(&mut self) {
        if self.gateway.drifted() {
            warn!("bridge-nf-call-iptables/ip6tables were set back to 1 by another program; setting them to 0 again");
            self.gateway.turn_off();
        }
        let generation = match self.nft.generation() {
            Ok(g) => g,
            Err(e) => {
                warn!("cannot read the nftables generation: {e}");
                return;
            }
        };
        let marks: Vec<u32> = self.tracker.ruleset.marks().collect();
        let routes_ok = self.routes.present(&marks, self.tracker.cfg.route_table).unwrap_or(false);
        if generation == self.generation && routes_ok {
            return;
        }
        let table_ok = self.nft.table_exists().unwrap_or(false);
        if generation != self.generation {
            warn!(
                table_present = table_ok,
                "the nftables ruleset was changed by another program (table inet cgtproxy {}); restoring it",
                if table_ok { "still present" } else { "gone" }
            );
        }
        if !routes_ok {
            warn!("policy routing rules or routes were removed; restoring them");
        }
        self.resync();
    }

    fn reload(&mut self) {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let started = Instant::now();
        match self.source.load() {
            Err(e) => error!("reload refused, keeping the running config: {e}"),
            Ok(cfg) => match cgroup::resolve_root(&cfg.cgroup_root) {
                Err(e) => error!("reload refused, keeping the running config: {e}"),
                Ok(root) if root != self.root => {
                    error!(old = %self.root.display(), new = %root.display(), "reload refused: cgroup-root cannot change while running ({} -> {}); restart instead", self.root.display(), root.display())
                }
                Ok(_) => {
                    let old = std::mem::replace(&mut self.tracker.cfg, cfg);
                    match self.rebuild() {
                        Ok(()) => {
                            self.guard_check(true);
                            self.state.reloads += 1;
                            self.save_state();
                            info!(
                                config = %self.tracker.cfg.origin,
                                elements = self.tracker.ruleset.elements.len(),
                                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                                "reloaded {}: {} map elements, {:.1} ms",
                                self.tracker.cfg.origin,
                                self.tracker.ruleset.elements.len(),
                                started.elapsed().as_secs_f64() * 1000.0
                            )
                        }
                        Err(e) => {
                            error!("reload failed, restoring the previous config: {e}");
                            self.tracker.cfg = old;
                            self.resync();
                        }
                    }
                }
            },
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Remove table, rules and routes; every error is collected.
    fn cleanup(&mut self) -> Vec<DaemonError> {
        let mut errors = Vec::new();
        if let Err(e) = self.nft.delete_table() {
            errors.push(e.into());
        }
        if let Err(e) = self.nft.delete_bridge_table() {
            errors.push(e.into());
        }
        errors.extend(self.gateway.restore().into_iter().map(DaemonError::Gateway));
        let (marks, table) = std::mem::take(&mut self.routed);
        errors.extend(self.routes.remove(&marks, table).into_iter().map(DaemonError::from));
        errors
    }
}
