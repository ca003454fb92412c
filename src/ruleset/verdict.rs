//! What the `cgroup-class` map says about a cgroup, as a value.

use std::collections::BTreeMap;

use crate::config::{Config, Target, Tproxy};
use crate::names::{CLASS_DIRECT, CLASS_DROP, CLASS_REJECT, TAIL_BASE, TAIL_LAST};

/// What `cgroup-class` says about a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The traffic leaves normally.
    Direct,
    Drop,
    /// Refused: TCP reset, ICMP port unreachable otherwise.
    Reject,
    /// Marked with this tproxy mark and so routed to the TPROXY server.
    Tproxy(u32),
    /// Strict mode, a cgroup no rule matches: known, so not held, and
    /// decided by the next shallower level (class 0 leaves the mark unset).
    Continue,
    /// A cgroup whose rules have conditions: this tail class is turned
    /// into a final class per packet by its chain `tail-N` (`tails.rs`).
    Tail(u32),
}

impl Verdict {
    pub fn for_target(target: &Target, tproxies: &BTreeMap<String, Tproxy>) -> Self {
        match target {
            Target::Direct => Verdict::Direct,
            Target::Drop => Verdict::Drop,
            Target::Reject => Verdict::Reject,
            Target::Tproxy(name) => Verdict::Tproxy(tproxies.get(name).map_or(0, |t| t.mark)),
        }
    }

    /// The value stored in `cgroup-class`.
    pub fn class(self) -> u32 {
        match self {
            Verdict::Direct => CLASS_DIRECT,
            Verdict::Drop => CLASS_DROP,
            Verdict::Reject => CLASS_REJECT,
            Verdict::Tproxy(mark) => mark,
            Verdict::Continue => 0,
            Verdict::Tail(class) => class,
        }
    }

    /// The target as people read it, in every command and log line.
    pub fn describe(self, cfg: &Config) -> String {
        match self {
            Verdict::Direct => "direct".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Reject => "reject".into(),
            Verdict::Continue => "unmatched (strict)".into(),
            Verdict::Tail(class) => format!("conditional ({})", crate::names::tail_chain(class - TAIL_BASE)),
            Verdict::Tproxy(mark) => match cfg.tproxies.values().find(|t| t.mark == mark) {
                Some(t) => format!("tproxy {}", t.name),
                None => format!("tproxy mark {mark:#x}"),
            },
        }
    }

    pub fn from_class(class: u32) -> Self {
        match class {
            CLASS_DIRECT => Verdict::Direct,
            CLASS_DROP => Verdict::Drop,
            CLASS_REJECT => Verdict::Reject,
            0 => Verdict::Continue,
            TAIL_BASE..=TAIL_LAST => Verdict::Tail(class),
            mark => Verdict::Tproxy(mark),
        }
    }
}

/// One element of `cgroup-class`. No path: there is one element per
/// cgroup, and only printing needs it (see [`Ruleset::render`]); without it
/// an element is 20 bytes instead of 40.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub level: u32,
    pub verdict: Verdict,
    /// Index of the config rule that chose it (None: strict mode's
    /// `continue` for an unmatched cgroup). u32, not usize: one more
    /// word per cgroup otherwise.
    pub rule: Option<u32>,
}

/// An inclusive address range of a bypass set (IPv4 in the low 32 bits).
pub type Interval = (u128, u128);

/// Sort and merge overlapping or adjacent ranges: the kernel's interval sets
/// reject overlaps, and `nft` shows merged ranges.
pub(super) fn merge(mut ranges: Vec<Interval>) -> Vec<Interval> {
    ranges.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}
