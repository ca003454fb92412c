//! Gateway mode's state outside the nftables table: whether this kernel can
//! broute, and when it cannot, br_netfilter's IP hooks turned off in this
//! network namespace while the daemon runs (restored on exit).
//!
//! With `net.bridge.bridge-nf-call-iptables=1` the inet prerouting hooks run
//! while a frame is bridged and the socket TPROXY assigns is orphaned by
//! ip_rcv_core(): proxied traffic of bridged clients would time out. The
//! bridge table's broute avoids that per frame; where brouting cannot be
//! used (brouting.rs says why) the sysctls are held at 0 instead, and what
//! they were is journaled beside the state file until it is put back.

use tracing::{info, warn};

pub use crate::bridge::{BridgeMode, Brouting, SYSCTLS, probe, read};
use crate::nft::Nft;
use crate::ruleset::Ruleset;

/// What the daemon changed outside its table, on disk beside the state file
/// (`state.sysctls`): a SIGKILL or a `--keep-on-exit` stop leaves the
/// sysctls at 0, and the next instance or `cgtproxy cleanup` must still
/// know what to put back. Only for the network namespace it was written in.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Journal {
    netns: u64,
    values: Vec<(String, String)>,
}

fn journal_path() -> std::path::PathBuf {
    crate::state::path().with_extension("sysctls")
}

fn own_netns() -> u64 {
    crate::netns::own().unwrap_or(0)
}

/// The journal of this network namespace, if any.
fn read_journal() -> Option<Journal> {
    let text = crate::state::read_file(&journal_path()).ok()?;
    let j: Journal = serde_json::from_str(&text).ok()?;
    (j.netns == own_netns()).then_some(j)
}

fn write_journal(values: &[(&'static str, String)]) {
    let path = journal_path();
    if values.is_empty() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let j = Journal { netns: own_netns(), values: values.iter().map(|(p, v)| (p.to_string(), v.clone())).collect() };
    // Beside the state file, with the same care: no symlink followed.
    let written =
        serde_json::to_vec(&j).map_err(std::io::Error::other).and_then(|b| crate::state::write_private(&path, &b));
    if let Err(e) = written {
        warn!("cannot write {}: {e}; after a crash `cgtproxy cleanup` cannot restore the sysctls", path.display());
    }
}

#[derive(Debug, Default)]
pub struct Gateway {
    /// Probed once, on the first ruleset that needs it.
    broute: Option<Brouting>,
    /// Values of [`SYSCTLS`] before we changed them.
    saved: Vec<(&'static str, String)>,
    pub mode: Option<BridgeMode>,
}

impl Gateway {
    /// Decide how `rs` deals with bridges; sets `rs.broute`. Called before
    /// each full apply.
    pub fn prepare(&mut self, nft: &mut Nft, rs: &mut Ruleset) {
        if rs.gateway_tproxies().is_empty() {
            rs.broute = false;
            return;
        }
        let brouting = self.broute.get_or_insert_with(|| {
            let b = probe(nft);
            if b != Brouting::Yes {
                warn!(
                    "{b}: bridged clients are proxied by turning br_netfilter's IP hooks off \
                     (bridge-nf-call-iptables/ip6tables = 0) in this network namespace while running"
                );
            }
            b
        });
        rs.broute = *brouting == Brouting::Yes;
    }

    /// After a successful apply: drop a bridge table the ruleset no longer
    /// has, and turn the sysctls off or back as the ruleset needs.
    pub fn sync(&mut self, nft: &mut Nft, rs: &Ruleset) {
        if !rs.has_bridge_table()
            && let Err(e) = nft.delete_bridge_table()
        {
            warn!("cannot delete table bridge cgtproxy: {e}");
        }
        let needs_off = !rs.gateway_tproxies().is_empty() && !rs.broute;
        self.mode = Some(BridgeMode::decide(!rs.gateway_tproxies().is_empty(), rs.broute));
        if self.mode == Some(BridgeMode::SysctlHidden) {
            warn!("gateway bridges: {}", BridgeMode::SysctlHidden);
        } else if needs_off {
            self.turn_off();
        } else {
            for e in self.restore() {
                warn!("{e}");
            }
        }
    }

    /// Set the sysctls to 0, remembering the first value seen; a program
    /// that sets them back (Docker does when it creates a network) is
    /// undone at the next health check.
    pub fn turn_off(&mut self) {
        self.adopt_journal();
        for path in SYSCTLS {
            let Some(value) = read(path) else { continue };
            if value == "0" {
                continue;
            }
            if !self.saved.iter().any(|(p, _)| *p == path) {
                self.saved.push((path, value.clone()));
            }
            write_journal(&self.saved);
            match std::fs::write(path, "0") {
                Ok(()) => info!("set {path} to 0 (was {value}) so TPROXY works for bridged clients"),
                Err(e) => warn!("cannot set {path} to 0: {e}; TPROXY of bridged clients will time out"),
            }
        }
    }

    /// A previous instance that was killed or kept its rules on exit left
    /// the sysctls at 0: take over the values its journal says to put back.
    fn adopt_journal(&mut self) {
        if self.saved.is_empty()
            && let Some(j) = read_journal()
        {
            self.saved = SYSCTLS
                .iter()
                .filter_map(|p| j.values.iter().find(|(jp, _)| jp == p).map(|(_, v)| (*p, v.clone())))
                .collect();
        }
    }

    /// Whether the sysctls need turning off again (health check).
    pub fn drifted(&self) -> bool {
        self.sysctls_off() && SYSCTLS.iter().any(|p| read(p).is_some_and(|v| v != "0"))
    }

    /// What `status` shows: the mode, with the reason brouting is not used
    /// when the kernel could.
    pub fn bridge_status(&self) -> String {
        self.mode.map_or_else(String::new, |m| m.status(self.broute.as_ref()))
    }

    /// Does the daemon hold the sysctls at 0 (the fallback mode)?
    pub fn sysctls_off(&self) -> bool {
        self.mode == Some(BridgeMode::SysctlOff)
    }

    /// Put back what we changed, or what a killed (or kept-on-exit)
    /// instance left in this network namespace's journal; returns the
    /// errors.
    pub fn restore(&mut self) -> Vec<String> {
        // Whether or not this instance ever turned them off: one with no
        // gateway entries must still undo its predecessor's change.
        self.adopt_journal();
        if self.saved.is_empty() {
            // Nothing to put back, and another namespace's journal stays.
            return Vec::new();
        }
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        for (path, value) in std::mem::take(&mut self.saved) {
            match std::fs::write(path, &value) {
                Ok(()) => info!("restored {path} to {value}"),
                Err(e) => {
                    errors.push(format!("cannot restore {path} to {value}: {e}"));
                    failed.push((path, value));
                }
            }
        }
        // What could not be put back stays for `cgtproxy cleanup`.
        write_journal(&failed);
        errors
    }
}
