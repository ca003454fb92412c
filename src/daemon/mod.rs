//! The running daemon: startup, the event loop, self-healing, reload and
//! cleanup. All kernel and filesystem I/O of `cgtproxy run` lives here; the
//! decisions are made by [`tracker::Tracker`] and [`crate::ruleset`].
//!
//! Where each part lives (no file here imports this one; it only declares
//! them and re-exports the entry points):
//! - `startup.rs`: [`run`], from loading the config to the exit teardown.
//! - `event_loop.rs`: the `poll` loop, cgroup events, reload.
//! - `healing.rs`: undoing outside changes, degrade, retry with backoff.
//! - `kernel.rs`: what the daemon put in the kernel and the one teardown
//!   ([`cleanup`] for `cgtproxy cleanup` included).
//! - `running.rs`: the daemon's state and the delta commit they all use;
//!   `fresh.rs`: whether a new cgroup's flows may be cached stale.
//! - `options.rs`, `error.rs`: [`Options`], [`ConfigSource`], [`DaemonError`].
//! - [`events`], [`gateway`], `guard.rs`, `signals.rs`, [`tracker`],
//!   [`watch`], `wds.rs`: notifications, gateway sysctls, the proxy-loop
//!   guard, signalfd, classification state, inotify.

mod error;
mod event_loop;
pub mod events;
mod fresh;
pub mod gateway;
mod guard;
mod healing;
mod kernel;
mod lock;
mod options;
mod publish;
mod running;
mod signals;
mod startup;
pub mod tracker;
pub mod watch;
mod wds;

pub use error::DaemonError;
pub use kernel::cleanup;
pub use options::{ConfigSource, Options};
pub use startup::run;
