//! The terminal side of `top`: raw mode and the alternate screen (restored
//! on every way out: `q`, Ctrl-C, an error, a panic), keys, resizes and the
//! refresh tick.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::keys::{Key, ViewState};
use super::model::{Sample, Sampler};
use super::read::{Reader, TopError};
use super::view::draw;

/// Restores the terminal when dropped, so an early return or an error
/// leaves the shell usable (ratatui's own panic hook covers panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn key(k: KeyEvent) -> Option<Key> {
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        _ => return None,
    })
}

/// Run the full-screen view until `q` or Ctrl-C, one reading per `interval`.
pub fn run(reader: &mut Reader, interval: Duration) -> Result<(), TopError> {
    let mut sampler = Sampler::default();
    let mut sample: Sample = sampler.sample(reader.read()?);
    // Raw mode and the alternate screen; ratatui also installs a panic hook
    // that restores the terminal before the panic message.
    let mut term = ratatui::try_init().map_err(TopError::Terminal)?;
    let _restore = Restore;
    let mut view = ViewState::default();
    let mut next = Instant::now() + interval;
    loop {
        term.draw(|f| draw(f, &sample, &view)).map_err(TopError::Terminal)?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(TopError::Terminal)? {
            match event::read().map_err(TopError::Terminal)? {
                Event::Key(k) => {
                    if let Some(k) = key(k) {
                        view.key(k, &sample);
                    }
                }
                // The next draw takes the new size.
                Event::Resize(..) => term.autoresize().map_err(TopError::Terminal)?,
                _ => {}
            }
            if view.quit {
                return Ok(());
            }
        }
        if Instant::now() >= next {
            sample = sampler.sample(reader.read()?);
            next = Instant::now() + interval;
        }
    }
}
