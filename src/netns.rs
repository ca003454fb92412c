//! Network namespace identity: a leaf the daemon, its journal and the
//! inspection commands share.

/// This process's network namespace (the inode of /proc/self/ns/net).
pub fn own() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}
