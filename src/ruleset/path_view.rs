//! The config's view of one cgroup path, as the daemon builds it when every
//! ancestor exists: which rules decide its packets, and what its ancestors
//! impose (a drop or reject above holds below, whatever a child's name
//! matches). `explain` and `status` print it; [`super::Tails::resolve`] and
//! [`super::Ruleset::classify`] are what it mirrors, and the tests hold the
//! two together.

use super::tails::describe_rules;
use super::verdict::Verdict;
use crate::config::{Config, Rule, Target};

/// What decides the packets of one cgroup path.
#[derive(Debug, Clone)]
pub struct PathView<'c> {
    /// The topmost ancestor whose rules hold for everything below it (its
    /// rules end in an unconditional drop or reject), as the end of its
    /// path in the viewed one.
    pub whole: Option<usize>,
    /// Drop and reject rules of conditional ancestors that come first for
    /// this cgroup, each with the end of its ancestor's path.
    pub inherited: Vec<(usize, &'c Rule)>,
    /// The rules that decide the cgroup's packets, in order, up to the
    /// first unconditional one; empty when no rule matches the path (its
    /// sockets take their nearest classified ancestor's verdict).
    pub rules: Vec<&'c Rule>,
}

fn refuses(r: &Rule) -> bool {
    matches!(r.target, Target::Drop | Target::Reject)
}

/// The view of `path` (relative to the cgroup root, `/`-separated).
pub fn view<'c>(cfg: &'c Config, path: &str) -> PathView<'c> {
    let mut whole: Option<(usize, Vec<&Rule>)> = None;
    let mut inherited: Vec<(usize, &Rule)> = Vec::new();
    let ends = path.match_indices('/').map(|(i, _)| i).filter(|&i| i > 0).chain(std::iter::once(path.len()));
    for end in ends {
        let p = &path[..end];
        // A path no rule matches has no element: it binds nothing and is
        // bound by nothing of its own.
        let Some(first) = cfg.classify(p) else { continue };
        let rules = match &whole {
            Some((_, rules)) => rules.clone(),
            None => {
                let mut rules: Vec<&Rule> = inherited.iter().map(|&(_, r)| r).collect();
                for r in cfg.rules[first.index..].iter().filter(|r| r.regex.is_match(p)) {
                    if !rules.iter().any(|x| x.index == r.index) {
                        rules.push(r);
                    }
                    if r.conditions.is_none() {
                        break;
                    }
                }
                rules
            }
        };
        if end == path.len() {
            return PathView { whole: whole.map(|(e, _)| e), inherited, rules };
        }
        if whole.is_some() {
            continue;
        }
        if rules.last().is_some_and(|r| r.conditions.is_none() && refuses(r)) {
            whole = Some((end, rules));
        } else {
            for r in rules.into_iter().filter(|r| refuses(r)) {
                if !inherited.iter().any(|(_, x)| x.index == r.index) {
                    inherited.push((end, r));
                }
            }
        }
    }
    PathView { whole: whole.map(|(e, _)| e), inherited, rules: Vec::new() }
}

impl PathView<'_> {
    /// Which rule takes which packets, as a person reads it, when more than
    /// one rule decides: `udp dport 443 → reject (rule 0); everything else
    /// → tproxy mihomo (rule 1)`. None: no rule, or one unconditional rule.
    pub fn describe(&self, cfg: &Config) -> Option<String> {
        if let [one] = self.rules.as_slice()
            && one.conditions.is_none()
        {
            return None;
        }
        if self.rules.is_empty() {
            return None;
        }
        Some(describe_rules(
            cfg,
            self.rules
                .iter()
                .map(|r| (r.conditions.as_ref(), Verdict::for_target(&r.target, &cfg.tproxies), r.index as u32)),
        ))
    }
}
