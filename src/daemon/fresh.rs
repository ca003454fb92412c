//! Can a new cgroup's flows be cached with its parent's class?
//!
//! A flow whose first packet left before the daemon classified its new
//! cgroup (the app won the race) was cached with the class of the cgroup's
//! nearest classified ancestor. Such a flow needs a socket made in the new
//! cgroup, so a process was in it before the element was committed. Asked
//! after that commit, `cgroup.events` says `populated 0` only if no process
//! is in it or below it now; then no process can have made a socket there
//! earlier and still be around to use it (a process that left its
//! brand-new cgroup again within the daemon's reaction time and passed a
//! socket on is the exception, docs/security.md). `populated 1` (or a file
//! that cannot be read) means a new flow-cache generation. A freshly made
//! cgroup (the common case: systemd, `cgtproxy exec`, `mkdir` then move)
//! is empty when the daemon reacts, and costs no generation.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

/// The first of `fresh` (paths relative to `root`) that has, or may have
/// had, processes; None when every one is empty or gone (a removed
/// cgroup's element is handled by its own removal).
pub fn populated<'a>(root: &Path, fresh: &'a [Arc<str>]) -> Option<&'a str> {
    fresh.iter().map(|p| &**p).find(|path| {
        let file = crate::cgroup::dir_of(root, path).join("cgroup.events");
        match std::fs::read_to_string(file) {
            Ok(text) => text.lines().any(|l| l.trim() != "populated 0" && l.starts_with("populated")),
            Err(e) => e.kind() != ErrorKind::NotFound,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_or_gone_cgroups_need_no_new_generation() {
        let root = std::env::temp_dir().join(format!("cgtproxy-fresh-{}", std::process::id()));
        for (name, events) in [("empty", "populated 0\nfrozen 0\n"), ("busy", "populated 1\nfrozen 0\n")] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("cgroup.events"), events).unwrap();
        }
        // A directory without the file (not cgroupfs): cannot tell, so yes.
        std::fs::create_dir_all(root.join("odd/cgroup.events")).unwrap();
        let paths = |ps: &[&str]| ps.iter().map(|p| Arc::from(*p)).collect::<Vec<Arc<str>>>();
        assert_eq!(populated(&root, &paths(&["/empty", "/gone"])), None);
        assert_eq!(populated(&root, &paths(&["/empty", "/busy"])), Some("/busy"));
        assert_eq!(populated(&root, &paths(&["/odd"])), Some("/odd"), "unreadable: assume it had processes");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
