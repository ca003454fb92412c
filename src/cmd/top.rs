//! `cgtproxy top`: a live picture of every app's sockets, traffic and
//! route. [`read`] reads the world (cgroups, sock_diag, the table's
//! counters), [`model`] turns two readings into a [`Sample`] with rates,
//! [`view`] draws it (pure), [`tui`] runs the terminal; `--once --json`
//! prints the sample instead.

pub mod appname;
pub mod keys;
pub mod model;
pub mod read;
pub mod tui;
pub mod view;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use keys::ViewState;
pub use model::{Sample, Sampler};
pub use read::{Reader, TopError};

use crate::config::Config;

/// One sample: two readings `interval` apart, so it has rates.
pub fn once(cfg: &Config, interval: Duration) -> Result<Sample, TopError> {
    let mut reader = Reader::open(cfg)?;
    let mut sampler = Sampler::default();
    sampler.sample(reader.read()?);
    std::thread::sleep(interval);
    Ok(sampler.sample(reader.read()?))
}

/// The full-screen view until `q` or Ctrl-C.
pub fn run(cfg: &Config, interval: Duration) -> Result<(), TopError> {
    tui::run(&mut Reader::open(cfg)?, interval)
}

/// `top --once` as text: the screen a `width` x `height` terminal shows.
pub fn text(sample: &Sample, width: u16, height: u16) -> String {
    view::text(sample, &ViewState::default(), width, height)
}

/// `--interval SECS` as a duration, kept between 0.1 s and an hour.
pub fn interval(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.clamp(0.1, 3600.0))
}
