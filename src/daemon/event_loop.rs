//! The event loop: one `poll` over signals, inotify, the two kernel
//! notification sockets and the mount table, and what each wakeup does
//! (cgroup changes, reload, an unmounted root, the timers that exist only
//! while something is wrong).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::running::{Daemon, notify};
use super::signals::{Signal, Signals};
use super::tracker::Delta;
use super::watch::Change;
use crate::cgroup;

/// Rescan period while some directories have no inotify watch.
const UNWATCHED_RESCAN: Duration = Duration::from_secs(1);
/// How often the br_netfilter sysctls are read back in the fallback mode
/// (no notification exists for sysctls; Docker sets them to 1 when it
/// starts or creates a network).
const SYSCTL_RECHECK: Duration = Duration::from_secs(1);

impl Daemon {
    /// Run until SIGTERM/SIGINT.
    pub fn event_loop(&mut self, signals: &Signals) {
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
            let sysctls_off = self.kernel.gateway.sysctls_off();
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
            let (nft_fd, route_fd) = self.kernel.event_fds();
            let mut fds = [
                libc::pollfd { fd: signals.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.watcher.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: nft_fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: route_fd, events: libc::POLLIN, revents: 0 },
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
                self.kernel.absorb();
                self.on_foreign_sets();
            }
            if self.kernel.needs_healing() {
                self.heal();
            }
            // Checked whenever the daemon wakes, at least every
            // SYSCTL_RECHECK in that mode.
            self.heal_sysctls();
            if fds[1].revents != 0 {
                self.on_cgroup_events();
            }
            if fds[4].revents != 0 {
                self.on_mounts_changed();
            }
        }
    }

    /// Another program changed a set of its own tables: if classification
    /// is published to it (a table reloaded, a set flushed), fill it again.
    fn on_foreign_sets(&mut self) {
        let notices = self.kernel.take_set_notices();
        let ours = self.publisher.port();
        let mut any = false;
        for (family, table, set, _) in notices.iter().filter(|n| Some(n.3) != ours) {
            any |= self.publisher.notice(*family, table, set);
        }
        if any {
            self.publish(false);
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

    /// SIGHUP: load the config again and rebuild for it; a config that
    /// does not load, or a failed rebuild, keeps the running one.
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
                            self.publish(true);
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
}
