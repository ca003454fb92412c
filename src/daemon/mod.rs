//! The running daemon: startup, the event loop, self-healing, reload and
//! cleanup. All kernel and filesystem I/O of `cgtproxy` run lives here; the
//! decisions are made by [`tracker::Tracker`] and [`crate::ruleset`].

pub mod events;
pub mod gateway;
mod guard;
mod signals;
pub mod tracker;
pub mod watch;
mod wds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::cgroup::{self, CgroupError};
use crate::config::{Config, ConfigError};
use crate::names::CHAIN_CLASSIFY;
use crate::nft::{Nft, NftError, encode};
use crate::route::{RouteError, Routes};
use events::{KernelEvents, Own};
use signals::{Signal, Signals};
use tracker::{Delta, Tracker};
use watch::{Change, Watcher};

/// The first retry after an error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Rescan period while some directories have no inotify watch.
const UNWATCHED_RESCAN: Duration = Duration::from_secs(1);
/// How often the br_netfilter sysctls are read back in the fallback mode
/// (no notification exists for sysctls; Docker sets them to 1 when it
/// starts or creates a network).
const SYSCTL_RECHECK: Duration = Duration::from_secs(1);
/// CGROUP2_SUPER_MAGIC: the root must be a mounted cgroup2 file system.

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
    #[error("cannot subscribe to kernel notifications: {0}")]
    Events(#[source] std::io::Error),
    #[error("cgroup root {0} is not a mounted cgroup2 file system (unmounted or gone)")]
    RootGone(String),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("cleanup failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Cleanup(Vec<DaemonError>),
}

/// What the daemon does when it is told to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Leave the table and routing in place on SIGTERM/SIGINT (fail closed
    /// across a restart: the next instance replaces them atomically).
    /// `cgtproxy cleanup` removes them; the systemd unit runs it when the
    /// service is really stopping.
    pub keep_on_exit: bool,
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
    /// Outside changes still to be undone.
    heal_table: bool,
    heal_routing: bool,
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
    /// The last error and when to retry; None when all is well.
    trouble: Option<Trouble>,
    /// /proc/self/mountinfo: poll says POLLPRI when the mount table changes,
    /// so an unmounted (or remounted) cgroup root is noticed without a timer
    /// (inotify says nothing while another mount keeps the superblock alive).
    mounts: Option<std::fs::File>,
}

/// Degraded: an error that a later retry (a full rebuild) may fix. The last
/// good kernel state stays in force meanwhile.
struct Trouble {
    what: String,
    backoff: Duration,
    retry_at: Instant,
}

/// Run until SIGTERM/SIGINT. With [`Options::keep_on_exit`] the table and
/// routing stay (fail closed); otherwise everything added is removed.
pub fn run(source: ConfigSource, opts: Options) -> Result<(), DaemonError> {
    // Signals first, so a SIGTERM during startup still leads to cleanup.
    let signals = Signals::new().map_err(DaemonError::Signals)?;
    let cfg = source.load()?;
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let started = Instant::now();
    let mut watcher = Watcher::new(&root).map_err(|e| watch_error(&root, e))?;
    let cgroups = watcher.rewatch_all().map_err(|e| watch_error(&root, e))?;
    let walked = started.elapsed();
    let tracker = Tracker::new(cfg, &cgroups);
    // The tracker holds what it needs; the scan list would stay alive for
    // the daemon's lifetime otherwise.
    drop(cgroups);
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
    let mut d = Daemon {
        source,
        root,
        tracker,
        nft,
        routes,
        watcher,
        events,
        nft_port,
        route_port,
        handles: BTreeMap::new(),
        generation: 0,
        own_commits: 0,
        heal_table: false,
        heal_routing: false,
        routed: (Vec::new(), 0),
        state: Default::default(),
        watchdog: sd_notify::watchdog_enabled(),
        guard: guard::Guard::new(),
        gateway: Default::default(),
        trouble: None,
        mounts: std::fs::File::open("/proc/self/mountinfo").ok(),
    };
    // The generation before our first commit: if notifications of a large
    // first commit overrun the socket, GETGEN == this + 1 shows that only
    // we committed (no second full apply).
    d.generation = d.nft.generation().unwrap_or(0);
    let synced = Instant::now();
    if let Err(e) = d.sync_all() {
        // A previous instance's table (restart) stays when keeping: it is
        // still the best classification there is.
        if !opts.keep_on_exit {
            let cleanup = d.cleanup();
            if !cleanup.is_empty() {
                error!("{}", DaemonError::Cleanup(cleanup));
            }
        }
        return Err(e);
    }
    info!(
        config = %d.tracker.cfg.origin,
        cgroup_root = %d.root.display(),
        cgroups = d.tracker.paths.len(),
        elements = d.tracker.ruleset.elements.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        walk_ms = walked.as_secs_f64() * 1000.0,
        kernel_ms = synced.elapsed().as_secs_f64() * 1000.0,
        "ready: all cgroups classified ({} cgroups below {}, {} map elements, config {}, {:.1} ms: {:.1} walking \
         the cgroup tree, {:.1} putting table and routing into the kernel)",
        d.tracker.paths.len(),
        d.root.display(),
        d.tracker.ruleset.elements.len(),
        d.tracker.cfg.origin,
        started.elapsed().as_secs_f64() * 1000.0,
        walked.as_secs_f64() * 1000.0,
        synced.elapsed().as_secs_f64() * 1000.0
    );
    d.state = crate::state::DaemonState {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        config: d.tracker.cfg.origin.clone(),
        cgroup_root: d.root.display().to_string(),
        started: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0),
        startup_ms: started.elapsed().as_secs_f64() * 1000.0,
        netns: crate::netns::own().unwrap_or(0),
        keep_on_exit: opts.keep_on_exit,
        ..Default::default()
    };
    d.guard_check(true);
    d.save_state();
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("all cgroups classified")]);
    d.event_loop(&signals);
    crate::state::remove();
    if opts.keep_on_exit {
        info!("stopped; table inet cgtproxy and its routing stay in force until the next start or `cgtproxy cleanup`");
        return Ok(());
    }
    let errors = d.cleanup();
    if errors.is_empty() { Ok(()) } else { Err(DaemonError::Cleanup(errors)) }
}

fn watch_error(root: &Path, source: std::io::Error) -> DaemonError {
    DaemonError::Watch { root: root.display().to_string(), source }
}

fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}

/// Is `root` a mounted cgroup2 file system (not an empty mount point)?
/// Remove what a daemon left (`cgtproxy cleanup`): the table and the
/// routing `cfg` uses. Every error is collected.
pub fn cleanup(cfg: &Config) -> Result<bool, DaemonError> {
    let mut errors = Vec::new();
    let removed = match Nft::open().and_then(|mut n| Ok((n.delete_table()?, n.delete_bridge_table()?))) {
        Ok((r, _)) => r,
        Err(e) => {
            errors.push(e.into());
            false
        }
    };
    errors.extend(gateway::restore_journal().into_iter().map(DaemonError::Gateway));
    let marks: Vec<u32> = cfg.tproxies.values().map(|t| t.mark).collect();
    match Routes::open() {
        Ok(mut r) => errors.extend(r.remove(&marks, cfg.route_table).into_iter().map(DaemonError::from)),
        Err(e) => errors.push(e.into()),
    }
    if errors.is_empty() { Ok(removed) } else { Err(DaemonError::Cleanup(errors)) }
}

impl Daemon {
    /// Update and write the state file (a failure is logged, not fatal).
    fn save_state(&mut self) {
        self.state.cgroups = self.tracker.paths.len();
        self.state.elements = self.tracker.ruleset.elements.len();
        self.state.strict = self.tracker.cfg.strict;
        self.state.config = self.tracker.cfg.origin.clone();
        self.state.guard = self.guard.findings.clone();
        self.state.gateway_bridge = self.gateway.bridge_status();
        self.state.degraded = self.trouble.as_ref().map(|t| t.what.clone());
        if let Err(e) = crate::state::write(&self.state) {
            warn!(path = %crate::state::path().display(), "cannot write the state file: {e}");
        }
    }

    /// Routing, then the whole table in one batch (routes first: a mark
    /// without its route would send packets out directly).
    fn sync_all(&mut self) -> Result<(), DaemonError> {
        let marks: Vec<u32> = self.tracker.ruleset.marks().collect();
        let table = self.tracker.cfg.route_table;
        if let Err(e) = self.events.filter_routes(table) {
            warn!(
                "cannot attach the route notification filter ({e}); other tables' route changes will wake the daemon"
            );
        }
        self.routes.install(&marks, table)?;
        self.gateway.prepare(&mut self.nft, &mut self.tracker.ruleset);
        if let Err(e) = self.apply_full() {
            // The old table is still in force (the batch changed nothing):
            // drop the routing only the new config would have used.
            let routed = self.routed.clone();
            self.remove_routing_except((&marks, table), (&routed.0, routed.1), "undoing routing after a failed apply");
            return Err(e);
        }
        self.gateway.sync(&mut self.nft, &self.tracker.ruleset);
        let (old_marks, old_table) = std::mem::replace(&mut self.routed, (marks.clone(), table));
        self.remove_routing_except((&old_marks, old_table), (&marks, table), "removing routing of the previous config");
        Ok(())
    }

    /// Replace the whole table with the tracker's ruleset, atomically, and
    /// take the new rule handles from our own notifications.
    fn apply_full(&mut self) -> Result<(), DaemonError> {
        self.nft.apply_full(&self.tracker.ruleset)?;
        self.own_commits = self.own_commits.wrapping_add(1);
        self.absorb();
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
    /// and generation, and note outside changes for [`Daemon::heal`].
    fn absorb(&mut self) {
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

    /// Undo outside changes: routing first, then the whole table. A program
    /// that keeps changing them is answered each time (a few rounds per
    /// wakeup, then the next notification).
    fn heal(&mut self) {
        let started = Instant::now();
        let (mut table, mut routing) = (false, false);
        for _ in 0..4 {
            if !self.heal_table && !self.heal_routing {
                break;
            }
            if std::mem::take(&mut self.heal_routing) {
                let (marks, t) = self.routed.clone();
                if !self.routes.present(&marks, t).unwrap_or(false) {
                    routing = true;
                    if let Err(e) = self.routes.install(&marks, t) {
                        self.degrade(format!("restoring policy routing: {e}"));
                    }
                }
            }
            if std::mem::take(&mut self.heal_table) {
                table = true;
                if let Err(e) = self.apply_full() {
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
            warn!(
                elapsed_us,
                "the nftables ruleset was changed by another program; restored table inet cgtproxy in {elapsed_us} µs"
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

    /// Log an error, keep the kernel state as it is, and retry a full
    /// rebuild later with a growing backoff. Shown in `status` and STATUS=.
    fn degrade(&mut self, what: String) {
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

    fn retry(&mut self) {
        match self.rebuild() {
            Ok(()) => {
                if let Some(t) = self.trouble.take() {
                    info!(was = %t.what, "recovered from \"{}\": all cgroups classified again", t.what);
                }
                self.guard_check(true);
                notify(&[sd_notify::NotifyState::Status("all cgroups classified")]);
                self.state.resyncs += 1;
                self.save_state();
            }
            Err(e) => self.degrade(e.to_string()),
        }
    }

    fn event_loop(&mut self, signals: &Signals) {
        let mut next_ping = Instant::now();
        let mut next_rescan = Instant::now() + UNWATCHED_RESCAN;
        let mut next_sysctl_check = Instant::now() + SYSCTL_RECHECK;
        loop {
            if let Some(interval) = self.watchdog
                && Instant::now() >= next_ping
            {
                notify(&[sd_notify::NotifyState::Watchdog]);
                next_ping = Instant::now() + interval / 2;
            }
            if self.trouble.as_ref().is_some_and(|t| Instant::now() >= t.retry_at) {
                self.retry();
            }
            if self.trouble.is_none() && self.watcher.degraded && Instant::now() >= next_rescan {
                self.rescan_unwatched();
                next_rescan = Instant::now() + UNWATCHED_RESCAN;
            }
            let sysctls_off = self.gateway.sysctls_off();
            if sysctls_off && Instant::now() >= next_sysctl_check {
                next_sysctl_check = Instant::now() + SYSCTL_RECHECK;
            }
            // No timer at all when idle: only the watchdog (if systemd asks
            // for one), a retry after an error, the unwatched-tree rescan,
            // or the sysctl read-back of gateway mode's fallback.
            let deadlines = [
                self.watchdog.map(|_| next_ping),
                self.trouble.as_ref().map(|t| t.retry_at),
                (self.trouble.is_none() && self.watcher.degraded).then_some(next_rescan),
                sysctls_off.then_some(next_sysctl_check),
            ];
            let timeout = match deadlines.into_iter().flatten().min() {
                // Round up: a timeout rounded down to 0 ms would spin.
                Some(t) => t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000) as i32,
                None => -1,
            };
            let mut fds = [
                libc::pollfd { fd: signals.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.watcher.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.events.nft_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.events.route_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: self.mounts.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd),
                    events: libc::POLLPRI,
                    revents: 0,
                },
            ];
            // SAFETY: five valid pollfds (a negative fd is ignored).
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if fds[0].revents != 0 {
                for s in signals.read() {
                    match s {
                        Signal::Terminate(n) => {
                            info!(signal = n, "stopping on signal {n}");
                            notify(&[sd_notify::NotifyState::Stopping]);
                            return;
                        }
                        Signal::Reload => self.reload(),
                    }
                }
            }
            // Kernel notifications first: an outside flush is undone
            // before anything else.
            if fds[2].revents != 0 || fds[3].revents != 0 {
                self.absorb();
            }
            if self.heal_table || self.heal_routing {
                self.heal();
            }
            // No notification exists for sysctls: checked whenever the
            // daemon wakes, at least every SYSCTL_RECHECK in that mode.
            if self.gateway.drifted() {
                warn!(
                    "bridge-nf-call-iptables/ip6tables were set back to 1 by another program; setting them to 0 again"
                );
                self.gateway.turn_off();
            }
            if fds[1].revents != 0 {
                self.on_cgroup_events();
            }
            if fds[4].revents != 0 {
                self.on_mounts_changed();
            }
        }
    }

    /// The mount table changed: is the cgroup root still cgroup2? If it
    /// came back while degraded, retry now instead of after the backoff.
    fn on_mounts_changed(&mut self) {
        let mounted = cgroup::is_cgroup2(&self.root).unwrap_or(false);
        match &mut self.trouble {
            None if !mounted => {
                self.degrade(format!("the cgroup root {} was removed or unmounted", self.root.display()))
            }
            Some(t) if mounted => t.retry_at = Instant::now(),
            _ => {}
        }
    }

    fn on_cgroup_events(&mut self) {
        let changes = match self.watcher.read() {
            Ok(c) => c,
            Err(e) => return self.degrade(format!("reading cgroup events below {}: {e}", self.root.display())),
        };
        let mut delta = Delta::default();
        let mut rescan = false;
        for c in changes {
            match c {
                Change::Appeared(cgs) => delta.merge(self.tracker.appeared(&cgs)),
                Change::Vanished(path) => delta.merge(self.tracker.vanished(&path)),
                Change::Rescan => rescan = true,
                Change::RootGone => {
                    return self.degrade(format!("the cgroup root {} was removed or unmounted", self.root.display()));
                }
            }
        }
        if self.trouble.is_some() {
            // A rebuild is due anyway; it sees these changes.
            return;
        }
        if rescan {
            warn!("inotify queue overflowed or a cgroup was renamed: rescanning the whole tree");
            match self.watcher.rewatch_all() {
                Ok(all) => delta.merge(self.tracker.reconcile(&all)),
                Err(e) => return self.degrade(format!("rescanning {}: {e}", self.root.display())),
            }
        }
        if !delta.is_empty() {
            self.commit(&delta);
        }
        self.guard_check(false);
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
                for (_, e, path) in delta.add.iter().filter(|(_, e, _)| e.verdict != crate::ruleset::Verdict::Continue)
                {
                    let target = e.verdict.describe(&self.tracker.cfg);
                    // Only the proxy-loop guard adds a non-strict element without a rule.
                    let rule = e.rule.map_or_else(|| "proxy-loop guard".to_owned(), |r| format!("rule {r}"));
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
            }
        }
    }

    /// One batch; the handles of new level rules and the generation come
    /// back as our own notifications, read from the local queue (no
    /// request to the kernel after the commit).
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
        encode::cgroup_elements(&mut b, delta.add.iter().map(|(id, e, _)| (id, e)), None);
        self.nft.commit(b)?;
        self.own_commits = self.own_commits.wrapping_add(1);
        if !levels.is_empty() {
            self.absorb();
        }
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
        if !cgroup::is_cgroup2(&self.root).unwrap_or(false) {
            // An empty mount point would look like a tree without cgroups:
            // classifying nothing would let every app go direct.
            return Err(DaemonError::RootGone(self.root.display().to_string()));
        }
        let all = self.watcher.rewatch_all().map_err(|e| watch_error(&self.root, e))?;
        self.tracker.reset(&all);
        self.sync_all()
    }

    /// [`Daemon::rebuild`] after a failed update; a failure degrades.
    fn resync(&mut self) {
        self.state.resyncs += 1;
        match self.rebuild() {
            Ok(()) => self.guard_check(true),
            Err(e) => self.degrade(format!("cannot rebuild the ruleset: {e}")),
        }
        self.save_state();
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
