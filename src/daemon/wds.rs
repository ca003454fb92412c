//! The watch table: the relative path of each watched directory, by watch
//! descriptor.
//!
//! Two sorted vectors instead of a hash map: there is one watch per cgroup,
//! and a hash map of 10,000 watches touched 410 kB (its buckets are spread
//! over all of it) where these are 20 bytes a watch. The kernel hands out
//! watch descriptors in increasing order, so an insertion is a push; a
//! descriptor it hands out again (the same directory watched twice, or a
//! reused number) is found by binary search. Removal leaves a hole, so that
//! a burst of deletions does not move the whole table per watch; the holes
//! are squeezed out once they are half of it.

use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Watches {
    /// Sorted, no duplicates.
    wds: Vec<i32>,
    /// `paths[i]` belongs to `wds[i]`; None: removed.
    paths: Vec<Option<Arc<str>>>,
    holes: usize,
}

impl Watches {
    /// Number of watches.
    pub fn count(&self) -> usize {
        self.wds.len() - self.holes
    }

    pub fn get(&self, wd: i32) -> Option<&Arc<str>> {
        let i = self.wds.binary_search(&wd).ok()?;
        self.paths[i].as_ref()
    }

    /// Record `wd` for `path`, replacing what it had.
    pub fn insert(&mut self, wd: i32, path: Arc<str>) {
        if self.wds.last().is_none_or(|&last| last < wd) {
            self.wds.push(wd);
            self.paths.push(Some(path));
            return;
        }
        match self.wds.binary_search(&wd) {
            Ok(i) => {
                if self.paths[i].replace(path).is_none() {
                    self.holes -= 1;
                }
            }
            Err(i) => {
                self.wds.insert(i, wd);
                self.paths.insert(i, Some(path));
            }
        }
    }

    pub fn remove(&mut self, wd: i32) -> Option<Arc<str>> {
        let i = self.wds.binary_search(&wd).ok()?;
        let path = self.paths[i].take()?;
        self.holes += 1;
        if self.holes * 2 > self.wds.len() {
            self.squeeze();
        }
        Some(path)
    }

    /// Remove every watch; returns their descriptors.
    pub fn drain(&mut self) -> Vec<i32> {
        let wds = self.wds.iter().zip(&self.paths).filter(|(_, p)| p.is_some()).map(|(wd, _)| *wd).collect();
        *self = Watches::default();
        wds
    }

    fn squeeze(&mut self) {
        let mut keep = self.paths.iter().map(Option::is_some);
        self.wds.retain(|_| keep.next().unwrap_or(false));
        self.paths.retain(Option::is_some);
        self.holes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_in_any_order() {
        let mut w = Watches::default();
        for wd in [1, 2, 5, 3, 9, 4] {
            w.insert(wd, format!("/{wd}").into());
        }
        assert_eq!(w.count(), 6);
        assert_eq!(w.get(3).map(|p| &**p), Some("/3"));
        assert_eq!(w.get(7), None);
        w.insert(3, "/again".into());
        assert_eq!(w.count(), 6);
        assert_eq!(w.get(3).map(|p| &**p), Some("/again"));
        assert_eq!(w.remove(3).as_deref(), Some("/again"));
        assert_eq!(w.remove(3), None);
        assert_eq!(w.get(3), None);
        assert_eq!(w.count(), 5);
        // A removed descriptor handed out again.
        w.insert(3, "/3b".into());
        assert_eq!(w.get(3).map(|p| &**p), Some("/3b"));
        assert_eq!(w.count(), 6);
        // Enough holes to squeeze: the rest is still found.
        for wd in [1, 2, 3, 4] {
            assert!(w.remove(wd).is_some());
        }
        assert_eq!(w.count(), 2);
        assert_eq!(w.get(5).map(|p| &**p), Some("/5"));
        assert_eq!(w.get(9).map(|p| &**p), Some("/9"));
        w.insert(2, "/2".into());
        let mut all = w.drain();
        all.sort_unstable();
        assert_eq!(all, [2, 5, 9]);
        assert_eq!(w.count(), 0);
    }
}
