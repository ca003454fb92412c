//! What the kernel should hold, kept in step with cgroup events. Pure: it
//! turns "these cgroups appeared / this path vanished" into a [`Delta`] that
//! the daemon sends as one batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::cgroup::Cgroup;
use crate::config::Config;
use crate::ruleset::{Element, Ruleset, Verdict};

/// Changes to send to the kernel in one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Levels that need a new `socket cgroupv2 level N` rule.
    pub new_levels: Vec<u32>,
    /// New elements, by id, with their cgroup's path (for the log: the
    /// elements themselves have none).
    pub add: Vec<(u64, Element, Arc<str>)>,
    pub del: Vec<u64>,
    /// Some cgroup's verdict changed: flows cached with the old one must be
    /// classified again (a new flow-cache generation in the same batch).
    pub bump: bool,
    /// New cgroups whose verdict differs from their parent's. Only a flow
    /// that raced the daemon (a process already in the cgroup sent before
    /// its element existed) can be cached with the parent's class, so the
    /// daemon starts a new generation for them only when one of them has
    /// had processes by the time the batch is in (`daemon/fresh.rs`).
    pub fresh: Vec<Arc<str>>,
    /// Cgroups deeper than the kernel's `socket cgroupv2` limit: they take
    /// their ancestor's verdict (for one warning each).
    pub too_deep: Vec<Arc<str>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.nothing_to_send() && self.too_deep.is_empty()
    }

    /// No change for the kernel (there may be warnings).
    pub fn nothing_to_send(&self) -> bool {
        self.new_levels.is_empty() && self.add.is_empty() && self.del.is_empty()
    }

    /// Fold a later `other` into this delta. An element added here and
    /// deleted there never reaches the kernel, so neither is sent (deleting
    /// a missing element would fail the whole batch).
    pub fn merge(&mut self, other: Delta) {
        self.new_levels.extend(other.new_levels);
        self.new_levels.sort_unstable();
        self.new_levels.dedup();
        for id in other.del {
            let before = self.add.len();
            self.add.retain(|(a, ..)| *a != id);
            if self.add.len() == before {
                self.del.push(id);
            }
        }
        self.add.extend(other.add);
        self.bump |= other.bump;
        self.fresh.extend(other.fresh);
        self.too_deep.extend(other.too_deep);
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    pub cfg: Config,
    /// The ruleset as the kernel holds it after the last commit.
    pub ruleset: Ruleset,
    /// Every known cgroup path (matched or not) and its id.
    /// Ordered, so a subtree is one range (`p/` up to `p0`).
    pub paths: BTreeMap<Arc<str>, u64>,
    /// Cgroups kept direct whatever the rules say, because a TPROXY server
    /// listens in them (the proxy-loop guard), by id.
    pub pins: BTreeMap<u64, Arc<str>>,
}

impl Tracker {
    /// A tracker for `cfg` that knows `cgroups`.
    pub fn new(cfg: Config, cgroups: &[Cgroup]) -> Self {
        let mut tracker = Tracker { ruleset: Ruleset::new(&cfg), cfg, paths: BTreeMap::new(), pins: BTreeMap::new() };
        tracker.reset(cgroups);
        tracker
    }

    /// Forget everything and know exactly `cgroups` under the current config.
    pub fn reset(&mut self, cgroups: &[Cgroup]) {
        self.ruleset = Ruleset::build(&self.cfg, cgroups);
        self.paths = cgroups.iter().map(|c| (c.path.clone(), c.id)).collect();
        let pins = std::mem::take(&mut self.pins);
        for (id, path) in pins {
            // Kept only where the new rules would still proxy it: a pin
            // never overrides a drop or reject.
            if self.paths.get(&path) == Some(&id) && self.effective(&path).is_some_and(|v| self.would_proxy(v)) {
                self.pin(id, path);
            }
        }
    }

    /// Keep cgroup `id` at `path` direct (a proxy listens in it); the delta
    /// replaces its element.
    pub fn pin(&mut self, id: u64, path: Arc<str>) -> Delta {
        let mut delta = Delta { bump: self.class_at(&path) != crate::names::CLASS_DIRECT, ..Delta::default() };
        self.pins.insert(id, path.clone());
        match self.ruleset.elements.get(&id) {
            Some(e) if e.verdict == Verdict::Direct => return delta,
            // An element with other data cannot be added over: delete it
            // first, in the same batch.
            Some(_) => delta.del.push(id),
            None => {}
        }
        let level = crate::cgroup::level_of(&path);
        if self.ruleset.levels.insert(level) {
            delta.new_levels.push(level);
        }
        let e = Element { level, verdict: Verdict::Direct, rule: None };
        self.ruleset.elements.insert(id, e.clone());
        delta.add.push((id, e, path.clone()));
        delta.merge(self.reclassify_below(&path));
        delta
    }

    /// Give a pinned cgroup back to its rules.
    pub fn unpin(&mut self, id: u64) -> Delta {
        let mut delta = Delta::default();
        let Some(path) = self.pins.remove(&id) else { return delta };
        if self.ruleset.elements.remove(&id).is_some() {
            delta.del.push(id);
        }
        let level = crate::cgroup::level_of(&path);
        let cg = Cgroup { path, id, level };
        let paths = &self.paths;
        if let Some(e) =
            self.ruleset.classify(&self.cfg, &cg, |rs| rs.binding_above(&cg.path, |p| paths.get(p).copied()))
        {
            delta.add.push((id, e.clone(), cg.path.clone()));
        }
        delta.bump = self.class_at(&cg.path) != crate::names::CLASS_DIRECT;
        delta.merge(self.reclassify_below(&cg.path));
        delta
    }

    /// Classify every known cgroup below `path` again, after the verdict
    /// of `path` changed: what a drop or reject above binds follows it.
    /// Parents sort before their children, so each sees its new ancestors.
    fn reclassify_below(&mut self, path: &str) -> Delta {
        let mut delta = Delta::default();
        let (low, high) = (format!("{path}/"), format!("{path}0"));
        let below: Vec<(Arc<str>, u64)> = self
            .paths
            .range::<str, _>((Bound::Included(&*low), Bound::Excluded(&*high)))
            .filter(|(p, id)| {
                !self.pins.contains_key(id) && crate::cgroup::level_of(p) <= crate::names::MAX_SOCKET_LEVEL
            })
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (p, id) in below {
            let old = self.ruleset.elements.remove(&id);
            let cg = Cgroup { level: crate::cgroup::level_of(&p), path: p, id };
            let paths = &self.paths;
            let above = |rs: &Ruleset| rs.binding_above(&cg.path, |p| paths.get(p).copied());
            let new = self.ruleset.classify(&self.cfg, &cg, above).cloned();
            if new == old {
                continue;
            }
            delta.bump = true;
            if old.is_some() {
                delta.del.push(id);
            }
            if let Some(e) = new {
                if self.ruleset.levels.insert(e.level) {
                    delta.new_levels.push(e.level);
                }
                delta.add.push((id, e, cg.path));
            }
        }
        delta
    }

    /// Does `v` send traffic to a tproxy (and may a proxy-loop pin
    /// replace it: a tail with a conditional drop or reject is never pinned)?
    pub fn would_proxy(&self, v: Verdict) -> bool {
        let tails = &self.ruleset.tails;
        matches!(v, Verdict::Tproxy(_)) || (tails.proxies(v) && !tails.binds(v))
    }

    /// The class a flow of the cgroup at `path` is cached with: its
    /// effective verdict's, direct when none.
    pub fn class_at(&self, path: &str) -> u32 {
        self.effective(path).map_or(crate::names::CLASS_DIRECT, Verdict::class)
    }

    /// The verdict the kernel applies to sockets of the cgroup at `path`:
    /// its own element or its nearest classified ancestor's.
    pub fn effective(&self, path: &str) -> Option<Verdict> {
        let mut p = path;
        loop {
            if let Some(id) = self.paths.get(p)
                && let Some(e) = self.ruleset.elements.get(id)
                && e.verdict != Verdict::Continue
            {
                return Some(e.verdict);
            }
            match p.rfind('/') {
                Some(0) | None => return None,
                Some(i) => p = &p[..i],
            }
        }
    }

    /// Cgroups that appeared (a new directory and what was found inside).
    pub fn appeared(&mut self, cgroups: &[Cgroup]) -> Delta {
        let mut delta = Delta::default();
        let levels_before: BTreeSet<u32> = self.ruleset.levels.clone();
        let mut replaced = Vec::new();
        for cg in cgroups {
            if let Some(old) = self.paths.insert(cg.path.clone(), cg.id) {
                if old == cg.id {
                    continue;
                }
                // Same path, new cgroup: the old one went away unseen.
                self.pins.remove(&old);
                if self.ruleset.elements.remove(&old).is_some() {
                    delta.del.push(old);
                }
                replaced.push(cg.path.clone());
            }
            if cg.level > crate::names::MAX_SOCKET_LEVEL {
                delta.too_deep.push(cg.path.clone());
                continue;
            }
            let before = self.class_at(&cg.path);
            let paths = &self.paths;
            if let Some(e) =
                self.ruleset.classify(&self.cfg, cg, |rs| rs.binding_above(&cg.path, |p| paths.get(p).copied()))
            {
                delta.add.push((cg.id, e.clone(), cg.path.clone()));
                // A flow that started before this element (the app won the
                // race) may be cached with its ancestor's class.
                if self.class_at(&cg.path) != before {
                    delta.fresh.push(cg.path.clone());
                }
            }
        }
        delta.new_levels = self.ruleset.levels.difference(&levels_before).copied().collect();
        for path in replaced {
            delta.merge(self.reclassify_below(&path));
        }
        delta
    }

    /// The cgroup at `path` and everything below it vanished.
    pub fn vanished(&mut self, path: &str) -> Delta {
        let mut delta = Delta::default();
        // '0' follows '/' in ASCII: `p/...` sorts between "p/" and "p0".
        let (low, high) = (format!("{path}/"), format!("{path}0"));
        let mut gone: Vec<Arc<str>> = self
            .paths
            .range::<str, _>((Bound::Included(&*low), Bound::Excluded(&*high)))
            .map(|(p, _)| p.clone())
            .collect();
        if let Some((p, _)) = self.paths.get_key_value(path) {
            gone.push(p.clone());
        }
        let mut classes = Vec::new();
        for p in gone {
            if let Some(id) = self.paths.remove(&p) {
                self.pins.remove(&id);
                if let Some(e) = self.ruleset.elements.remove(&id) {
                    delta.del.push(id);
                    if e.verdict != Verdict::Continue {
                        classes.push(e.verdict.class());
                    }
                }
            }
        }
        // Sockets that outlive their cgroup now take the parent's verdict.
        let parent = path.rfind('/').map_or("", |i| &path[..i]);
        let now = self.class_at(parent);
        delta.bump = classes.iter().any(|c| *c != now);
        delta
    }

    /// Bring the tracker to exactly `cgroups` (a full rescan): removes what
    /// is gone, adds what is new.
    pub fn reconcile(&mut self, cgroups: &[Cgroup]) -> Delta {
        let now: HashMap<&str, u64> = cgroups.iter().map(|c| (&*c.path, c.id)).collect();
        let mut delta = Delta::default();
        let gone: Vec<Arc<str>> =
            self.paths.iter().filter(|(p, id)| now.get(&***p) != Some(id)).map(|(p, _)| p.clone()).collect();
        for p in gone {
            if let Some(id) = self.paths.remove(&p) {
                self.pins.remove(&id);
                if self.ruleset.elements.remove(&id).is_some() {
                    delta.del.push(id);
                    delta.bump = true;
                }
            }
        }
        let fresh: Vec<Cgroup> = cgroups.iter().filter(|c| !self.paths.contains_key(&*c.path)).cloned().collect();
        delta.merge(self.appeared(&fresh));
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(path: &str, id: u64) -> Cgroup {
        Cgroup { path: path.into(), id, level: crate::cgroup::level_of(path) }
    }

    fn cfg() -> Config {
        Config::parse(
            "version: 1\ntproxies: {p: {mark: 1, port: 2}}\nrules:\n  - {match: '^/a/b', drop: true}\n  - {match: '^/a', tproxy: p}\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn new_levels_and_elements() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1), cg("/z", 2)]);
        assert_eq!(t.ruleset.levels.iter().copied().collect::<Vec<_>>(), [1]);
        let d = t.appeared(&[cg("/a/b", 3), cg("/a/b/c", 4), cg("/y", 5)]);
        assert_eq!(d.new_levels, [2, 3]);
        assert_eq!(d.add.iter().map(|(id, ..)| *id).collect::<Vec<_>>(), [3, 4]);
        assert!(t.appeared(&[cg("/a/b", 3)]).is_empty(), "known cgroups are no change");
        let d = t.vanished("/a/b");
        let mut del = d.del.clone();
        del.sort();
        assert_eq!(del, [3, 4]);
        assert!(!t.paths.contains_key("/a/b/c"));
        assert!(t.vanished("/y").is_empty(), "unmatched cgroups have no element");
        assert!(!t.paths.contains_key("/y"));
    }

    #[test]
    fn same_path_new_id_replaces() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1)]);
        let d = t.appeared(&[cg("/a", 9)]);
        assert_eq!(d.del, [1]);
        assert_eq!(d.add[0].0, 9);
    }

    #[test]
    fn reconcile_to_exact_set() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1), cg("/a/b", 2), cg("/a/x", 3)]);
        let d = t.reconcile(&[cg("/a", 1), cg("/a/x", 3), cg("/a/b", 7), cg("/a/q/r/s", 8)]);
        assert_eq!(d.del, [2]);
        let mut add: Vec<u64> = d.add.iter().map(|(id, ..)| *id).collect();
        add.sort();
        assert_eq!(add, [7, 8]);
        assert_eq!(d.new_levels, [4]);
        let want: Vec<u64> = vec![1, 3, 7, 8];
        assert_eq!(t.ruleset.elements.keys().copied().collect::<Vec<_>>(), want);
    }

    #[test]
    fn merge_cancels() {
        let mut t = Tracker::new(cfg(), &[]);
        let mut d = t.appeared(&[cg("/a", 1)]);
        d.merge(t.vanished("/a"));
        assert!(d.add.is_empty() && d.del.is_empty(), "{d:?}");
        let mut t = Tracker::new(cfg(), &[cg("/a", 1)]);
        let mut d = t.appeared(&[cg("/a/b", 2)]);
        d.merge(t.vanished("/a"));
        assert_eq!(d.del, [1]);
        assert!(d.add.is_empty());
    }

    #[test]
    fn pins_keep_a_cgroup_direct_until_unpinned() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1), cg("/a/b", 3), cg("/z", 4), cg("/z/p", 5)]);
        t.ruleset.elements.insert(4, Element { level: 1, verdict: Verdict::Tproxy(1), rule: None });
        assert_eq!(t.effective("/z/p"), Some(Verdict::Tproxy(1)), "inherited from /z");
        let d = t.pin(5, "/z/p".into());
        assert_eq!((d.del.len(), d.add.len(), d.new_levels.clone()), (0, 1, vec![]), "level 2 exists (/a/b)");
        assert_eq!(t.effective("/z/p"), Some(Verdict::Direct));
        assert!(t.pin(5, "/z/p".into()).is_empty(), "pinning twice changes nothing");
        // A pinned cgroup with an element of its own: replaced in one batch.
        let d = t.pin(3, "/a/b".into());
        assert_eq!((d.del.clone(), d.add.len()), (vec![3], 1));
        let d = t.unpin(3);
        assert_eq!((d.del.clone(), d.add[0].1.verdict), (vec![3], Verdict::Drop));
        t.pin(3, "/a/b".into());
        // A rebuild keeps the pins where the rules still proxy the cgroup
        // (/z/p inherits tproxy from /z), never over a drop (/a/b).
        t.reset(&[cg("/a", 1), cg("/a/b", 3), cg("/z", 4), cg("/z/p", 5)]);
        assert_eq!(t.effective("/a/b"), Some(Verdict::Drop));
        assert!(!t.pins.contains_key(&3));
        assert_eq!(t.effective("/z/p"), None, "the rebuild dropped the hand-made /z element");
        t.ruleset.elements.insert(4, Element { level: 1, verdict: Verdict::Tproxy(1), rule: None });
        t.pin(5, "/z/p".into());
        t.reset(&[cg("/a", 1), cg("/a/b", 3), cg("/z", 4), cg("/z/p", 5)]);
        assert!(!t.pins.contains_key(&5), "no rule proxies /z after a rebuild");
        t.ruleset.elements.insert(4, Element { level: 1, verdict: Verdict::Tproxy(1), rule: None });
        t.pin(5, "/z/p".into());
        let d = t.unpin(5);
        assert_eq!((d.del.clone(), d.add.len()), (vec![5], 0), "unmatched: no element of its own");
        assert_eq!(t.effective("/z/p"), Some(Verdict::Tproxy(1)), "inherited from /z again");
        t.pin(5, "/z/p".into());
        t.vanished("/z/p");
        assert!(t.pins.is_empty(), "a vanished cgroup is no longer pinned");
    }

    #[test]
    fn the_flow_cache_generation_moves_only_when_a_verdict_changes() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1)]);
        // /a/b has a rule of its own (drop, not its parent's tproxy): new,
        // so only a flow that raced the daemon can be stale (the daemon
        // bumps when the cgroup has had processes).
        let d = t.appeared(&[cg("/a/b", 2)]);
        assert_eq!((d.bump, d.fresh.as_slice()), (false, &["/a/b".into()][..]));
        // /a/b/c inherits drop; /y matches nothing: no verdict changes.
        let d = t.appeared(&[cg("/a/b/c", 3), cg("/y", 4)]);
        assert!(!d.bump && d.fresh.is_empty());
        // Removing /a/b: its sockets now take /a's tproxy.
        assert!(t.vanished("/a/b").bump);
        assert!(!t.vanished("/y").bump);
        // Pinning a proxied cgroup direct changes it; unpinning gives it back.
        assert!(t.pin(1, "/a".into()).bump);
        assert!(t.unpin(1).bump);
    }

    #[test]
    fn strict_continue_elements_do_not_move_the_generation() {
        let mut c = cfg();
        c.strict = true;
        let mut t = Tracker::new(c, &[cg("/a", 1)]);
        let d = t.appeared(&[cg("/z", 2), cg("/a/q", 3)]);
        assert_eq!(d.add.len(), 2, "strict: every cgroup has an element");
        assert!(!d.bump, "unmatched cgroups keep their parent's verdict");
    }

    #[test]
    fn cgroups_deeper_than_the_kernel_limit_get_no_element() {
        let mut t = Tracker::new(cfg(), &[cg("/a", 1)]);
        let deep = format!("/a{}", "/d".repeat(300));
        let d = t.appeared(&[cg(&deep, 9)]);
        assert!(d.add.is_empty() && d.new_levels.is_empty(), "{:?}", d.new_levels);
        assert_eq!(d.too_deep.len(), 1);
        assert!(!d.is_empty(), "the warning still goes out");
        assert_eq!(t.effective(&deep), Some(Verdict::Tproxy(1)), "its ancestor's verdict");
    }

    #[test]
    fn below_a_drop_or_reject_nothing_gets_out() {
        let cfg = Config::parse(
            "version: 1\nrules:\n  - {match: '^/d$', drop: true}\n  - {match: 'app', direct: true}\n  - {match: '^/r$', reject: true}\n",
            "t.yaml",
        )
        .unwrap();
        let tree = [
            cg("/d/app/q", 3),
            cg("/d/app", 2),
            cg("/d", 1),
            cg("/r", 4),
            cg("/r/app", 5),
            cg("/free", 7),
            cg("/free/app", 6),
        ];
        let mut t = Tracker::new(cfg, &tree);
        let v = |t: &Tracker, id| t.ruleset.elements.get(&id).map(|e| (e.verdict, e.rule));
        assert_eq!(v(&t, 2), Some((Verdict::Drop, Some(0))), "children before parents in the list: still bound");
        assert_eq!(v(&t, 3), Some((Verdict::Drop, Some(0))));
        assert_eq!(v(&t, 5), Some((Verdict::Reject, Some(2))));
        assert_eq!(v(&t, 6), Some((Verdict::Direct, Some(1))), "outside a drop a rule is a rule");
        let d = t.appeared(&[cg("/d/app2", 8), cg("/d/app2/app", 9)]);
        assert_eq!(
            d.add.iter().map(|(id, e, _)| (*id, e.verdict)).collect::<Vec<_>>(),
            [(8, Verdict::Drop), (9, Verdict::Drop)]
        );
        // The verdict of /d changes: everything below follows.
        let d = t.pin(1, "/d".into());
        assert_eq!(v(&t, 2), Some((Verdict::Direct, Some(1))));
        assert!(d.del.contains(&2) && d.add.iter().any(|(id, e, _)| *id == 2 && e.verdict == Verdict::Direct), "{d:?}");
        t.unpin(1);
        for id in [2, 3, 8, 9] {
            assert_eq!(v(&t, id), Some((Verdict::Drop, Some(0))), "id {id}");
        }
        // Same path, new cgroup (removed and made again unseen).
        let d = t.appeared(&[cg("/d", 11)]);
        assert_eq!(d.del, [1]);
        assert_eq!(v(&t, 2), Some((Verdict::Drop, Some(0))));
    }
}
