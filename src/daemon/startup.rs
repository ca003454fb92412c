//! Start and stop: load the config, walk and watch the cgroup tree, put the
//! table and routing into the kernel, tell systemd, run the event loop, and
//! on the way out remove everything again (or keep it, fail closed).

use std::time::Instant;

use tracing::{error, info, warn};

use super::error::DaemonError;
use super::guard::Guard;
use super::kernel::Kernel;
use super::options::{ConfigSource, Options};
use super::running::{Daemon, notify};
use super::signals::Signals;
use super::tracker::Tracker;
use super::watch::Watcher;
use crate::cgroup;

/// Run until SIGTERM/SIGINT. With [`Options::keep_on_exit`] the table and
/// routing stay (fail closed); otherwise everything added is removed.
pub fn run(source: ConfigSource, opts: Options) -> Result<(), DaemonError> {
    // Signals first, so a SIGTERM during startup still leads to cleanup.
    let signals = Signals::new().map_err(DaemonError::Signals)?;
    // One daemon per network namespace, before anything touches the kernel.
    let netns = crate::netns::own().unwrap_or(0);
    let (_lock, taken) = super::lock::take(netns)?;
    match taken {
        super::lock::Taken::Held => {}
        super::lock::Taken::Squatted(uid) => warn!(
            "the instance lock @{} of this network namespace is held by a socket that is not a root cgtproxy's \
             ({}): starting without it; a second daemon here would not be refused",
            _lock.name,
            uid.map_or_else(|| "nobody listens on it".to_owned(), |u| format!("uid {u}"))
        ),
    }
    let cfg = source.load()?;
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let started = Instant::now();
    let mut watcher = Watcher::new(&root).map_err(|e| DaemonError::watch(&root, e))?;
    let cgroups = watcher.rewatch_all().map_err(|e| DaemonError::watch(&root, e))?;
    let walked = started.elapsed();
    let tracker = Tracker::new(cfg, &cgroups);
    super::running::warn_too_deep(&cgroups);
    // The tracker holds what it needs; the scan list would stay alive for
    // the daemon's lifetime otherwise.
    drop(cgroups);
    let kernel = Kernel::open()?;
    let mut d = Daemon {
        source,
        root,
        tracker,
        kernel,
        watcher,
        state: Default::default(),
        watchdog: sd_notify::watchdog_enabled(),
        guard: Guard::new(),
        publisher: Default::default(),
        trouble: None,
        mounts: std::fs::File::open("/proc/self/mountinfo").ok(),
    };
    let synced = Instant::now();
    d.kernel.gateway.allow_off = d.tracker.cfg.gateway_bridge_netfilter_off;
    if let Err(e) = d.kernel.sync(&mut d.tracker.ruleset, d.tracker.cfg.route_table) {
        // A previous instance's table (restart) stays when keeping: it is
        // still the best classification there is.
        if !opts.keep_on_exit {
            let cleanup = d.kernel.teardown();
            if !cleanup.is_empty() {
                error!("{}", DaemonError::Cleanup(cleanup));
            }
        }
        return Err(e);
    }
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
    // The state file exists before "ready" is said: whoever acts on the
    // line (a test, a script) finds the daemon with `status` and `reload`.
    d.save_state();
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
    d.guard_check(true);
    d.publish(true);
    d.save_state();
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("all cgroups classified")]);
    d.event_loop(&signals);
    crate::state::remove();
    if opts.keep_on_exit {
        info!("stopped; table inet cgtproxy and its routing stay in force until the next start or `cgtproxy cleanup`");
        return Ok(());
    }
    let errors = d.kernel.teardown();
    if errors.is_empty() { Ok(()) } else { Err(DaemonError::Cleanup(errors)) }
}
