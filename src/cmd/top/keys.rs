//! What the user asked the view to show: sorting, grouping, the filter, the
//! selected app and whether its connections are open. Keys change it; pure,
//! so every key is unit-tested without a terminal.

use super::model::{AppRow, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Outgoing bytes per second, then incoming, highest first.
    Rate,
    Name,
}

/// The keys `top` understands, apart from the terminal library's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    /// Ctrl-C.
    Interrupt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewState {
    pub sort: Sort,
    /// Rows grouped by target.
    pub group: bool,
    /// Rows whose name, path or target contain this (case-insensitive).
    pub filter: String,
    /// While `/` is being typed: the text so far.
    pub editing: Option<String>,
    /// The selected row's cgroup path (kept across refreshes).
    pub selected: Option<String>,
    /// Showing the selected app's connections.
    pub detail: bool,
    pub quit: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState {
            sort: Sort::Rate,
            group: true,
            filter: String::new(),
            editing: None,
            selected: None,
            detail: false,
            quit: false,
        }
    }
}

impl ViewState {
    /// The app rows to show, filtered, grouped and sorted.
    pub fn rows<'a>(&self, s: &'a Sample) -> Vec<&'a AppRow> {
        let needle = self.editing.as_deref().unwrap_or(&self.filter).to_lowercase();
        let mut rows: Vec<&AppRow> = s
            .apps
            .iter()
            .filter(|a| {
                needle.is_empty() || [&a.name, &a.path, &a.target].iter().any(|f| f.to_lowercase().contains(&needle))
            })
            .collect();
        rows.sort_by(|a, b| {
            let group = if self.group { a.target.cmp(&b.target) } else { std::cmp::Ordering::Equal };
            let within = match self.sort {
                Sort::Rate => (b.out.bytes_per_s + b.inbound.bytes_per_s)
                    .total_cmp(&(a.out.bytes_per_s + a.inbound.bytes_per_s))
                    .then_with(|| a.name.cmp(&b.name)),
                Sort::Name => a.name.cmp(&b.name),
            };
            group.then(within).then_with(|| a.path.cmp(&b.path))
        });
        rows
    }

    /// The selected row, or the first when none (or a vanished one) is.
    pub fn selected<'a>(&self, rows: &[&'a AppRow]) -> Option<(usize, &'a AppRow)> {
        let at = self.selected.as_ref().and_then(|p| rows.iter().position(|r| &r.path == p)).unwrap_or(0);
        rows.get(at).map(|r| (at, *r))
    }

    /// Apply one key to the view of `s`.
    pub fn key(&mut self, k: Key, s: &Sample) {
        if k == Key::Interrupt {
            self.quit = true;
            return;
        }
        if let Some(text) = &mut self.editing {
            match k {
                Key::Char(c) => text.push(c),
                Key::Backspace => {
                    text.pop();
                }
                Key::Enter => self.filter = self.editing.take().unwrap_or_default(),
                Key::Esc => self.editing = None,
                _ => {}
            }
            return;
        }
        let rows = self.rows(s);
        let at = self.selected(&rows).map(|(i, _)| i);
        let pick = |i: usize| rows.get(i).map(|r| r.path.clone());
        match k {
            Key::Char('q') => self.quit = true,
            Key::Char('/') => self.editing = Some(self.filter.clone()),
            Key::Char('s') => {
                self.sort = if self.sort == Sort::Rate { Sort::Name } else { Sort::Rate };
            }
            Key::Char('g') => self.group = !self.group,
            Key::Down | Key::Char('j') => {
                self.selected = pick(at.map_or(0, |i| (i + 1).min(rows.len().saturating_sub(1))))
            }
            Key::Up | Key::Char('k') => self.selected = pick(at.map_or(0, |i| i.saturating_sub(1))),
            Key::Enter | Key::Char('c') => {
                if let Some(i) = at {
                    self.selected = pick(i);
                    self.detail = !self.detail;
                }
            }
            Key::Esc => {
                if self.detail {
                    self.detail = false;
                } else {
                    self.filter.clear();
                }
            }
            _ => {}
        }
    }
}
