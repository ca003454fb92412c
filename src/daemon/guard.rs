//! The proxy-loop guard. A TPROXY server whose own cgroup is proxied sends
//! its outgoing connections back to itself until it runs out of file
//! descriptors. The sockets listening on each tproxy port are found with
//! sock_diag; their cgroups are kept direct ("pinned") and the log and
//! `status` say so. Sockets carrying a tproxy's mark (a proxy whose routing
//! mark equals it) loop the same way; they are reported.
//!
//! It runs on events only (start, reload, rebuild, cgroup changes): an idle
//! daemon never wakes for it. A proxy started later inside a cgroup that
//! already exists is found at the next event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::{info, warn};

use super::tracker::{Delta, Tracker};
use crate::sockdiag::{ALL_STATES, SockDiag, SockInfo};

#[derive(Debug, Default)]
pub struct Guard {
    diag: Option<SockDiag>,
    /// Listener cgroup ids (and whether a trusted listener is among them)
    /// at the last check: the same set means nothing to do.
    last: BTreeSet<(u64, bool)>,
    /// Mark collisions already reported, by (cgroup id, mark).
    warned: BTreeSet<(u64, u32)>,
    /// What `status` shows: one sentence per finding.
    pub findings: Vec<String>,
}

/// A listener of a tproxy port, with the cgroup path it lives in.
struct Found {
    path: Arc<str>,
    /// "tproxy px (tcp port 7893)" for each listening socket.
    serves: BTreeSet<String>,
    /// Why the cgroup may be kept direct; None: no listener in it can
    /// receive TPROXY traffic and the config does not trust it.
    trusted: Option<String>,
    /// The owners of the sockets that earn nothing, for the message.
    untrusted_uids: BTreeSet<u32>,
}

impl Guard {
    pub fn new() -> Self {
        let diag = match SockDiag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                warn!("proxy-loop guard disabled: {e}");
                None
            }
        };
        Guard { diag, ..Default::default() }
    }

    /// Find the listeners of every tproxy port and pin their cgroups when
    /// their rules would proxy them. `full`: after a rebuild or reload,
    /// re-check everything and look for mark collisions too.
    pub fn check(&mut self, tracker: &mut Tracker, full: bool) -> Delta {
        let mut delta = Delta::default();
        let Some(diag) = self.diag.as_mut() else { return delta };
        let ports: Vec<u16> = tracker.cfg.tproxies.values().map(|t| t.port).collect();
        let listeners = if ports.is_empty() { Ok(Vec::new()) } else { diag.listeners(&ports) };
        let listeners = match listeners {
            Ok(l) => l,
            Err(e) => {
                // Once, not at every event: the kernel lacks inet_diag.
                warn!("proxy-loop guard disabled: cannot list the sockets on the tproxy ports: {e}");
                self.diag = None;
                return delta;
            }
        };
        let ids: BTreeSet<(u64, bool)> =
            listeners.iter().filter_map(|l| Some((l.cgroup?, trusted_socket(l).is_some()))).collect();
        if ids == self.last && !full {
            return delta;
        }
        self.last = ids;
        let mut found = resolve(tracker, &listeners);
        self.findings.clear();
        for (id, f) in &found {
            let serves = f.serves.iter().cloned().collect::<Vec<_>>().join(", ");
            let pinned = tracker.pins.contains_key(id);
            let path = crate::cgname::escape(&f.path);
            let Some(why) = &f.trusted else {
                let how = tracker.effective(&f.path).map_or("direct".to_owned(), |v| v.describe(&tracker.cfg));
                let uids = f.untrusted_uids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                let text = format!(
                    "{serves} listens in cgroup {path} on a socket that is not transparent (uid {uids}): TPROXY \
                     cannot deliver to it, so the cgroup keeps its rule ({how}); a real proxy sets IP_TRANSPARENT \
                     (CAP_NET_ADMIN), or list its cgroup in `proxy-cgroups`"
                );
                warn!(cgroup = %path, "{text}");
                self.findings.push(text);
                continue;
            };
            match tracker.effective(&f.path) {
                Some(v) if !pinned && tracker.would_proxy(v) => {
                    let target = v.describe(&tracker.cfg);
                    let text = format!(
                        "{serves} listens in cgroup {path}, which the rules send to {target}: kept direct so the proxy \
                         does not loop on its own connections ({why}); add a `direct: true` rule for that cgroup or \
                         start the proxy with `cgtproxy exec direct -- ...`"
                    );
                    warn!(cgroup = %path, "{text}");
                    self.findings.push(text);
                    delta.merge(tracker.pin(*id, f.path.clone()));
                }
                _ if pinned => self
                    .findings
                    .push(format!("{serves} listens in cgroup {path}: kept direct (proxy-loop guard: {why})")),
                v => {
                    let how = v.map_or("direct".to_owned(), |v| v.describe(&tracker.cfg));
                    let text = format!("{serves} listens in cgroup {path}: {how}, no loop");
                    if full {
                        info!(cgroup = %path, "{text}");
                    }
                    self.findings.push(text);
                }
            }
        }
        // Only trusted listeners keep a pin.
        found.retain(|_, f| f.trusted.is_some());
        let gone: Vec<u64> = tracker.pins.keys().filter(|id| !found.contains_key(id)).copied().collect();
        for id in gone {
            if let Some(path) = tracker.pins.get(&id).map(|p| crate::cgname::escape(p).into_owned()) {
                info!(cgroup = %path, "no proxy listens on a tproxy port in cgroup {path} any more: it follows its rules again");
            }
            delta.merge(tracker.unpin(id));
        }
        for port in &ports {
            if !listeners.iter().any(|l| l.local.port() == *port) {
                self.findings
                    .push(format!("nothing listens on tproxy port {port} (its traffic is lost until a proxy does)"));
            }
        }
        if full {
            self.marks(tracker);
        }
        delta
    }

    /// Report sockets whose SO_MARK is a tproxy mark: their packets are
    /// routed to the TPROXY port, the proxy's own included.
    fn marks(&mut self, tracker: &Tracker) {
        let Some(diag) = self.diag.as_mut() else { return };
        let marks: BTreeMap<u32, &str> = tracker.cfg.tproxies.values().map(|t| (t.mark, t.name.as_str())).collect();
        if marks.is_empty() {
            return;
        }
        let mut socks = Vec::new();
        for proto in [crate::ruleset::L4::Tcp, crate::ruleset::L4::Udp] {
            match diag.sockets(proto, ALL_STATES) {
                Ok(s) => socks.extend(s),
                Err(e) => {
                    warn!("proxy-loop guard: cannot list sockets for their marks: {e}");
                    return;
                }
            }
        }
        let by_id: BTreeMap<u64, &Arc<str>> = tracker.paths.iter().map(|(p, id)| (*id, p)).collect();
        for s in socks {
            let (Some(mark), Some(id)) = (s.mark, s.cgroup) else { continue };
            let Some(name) = marks.get(&mark) else { continue };
            let path = by_id.get(&id).map_or_else(|| format!("id {id}"), |p| crate::cgname::escape(p).into_owned());
            let text = format!(
                "sockets in cgroup {path} carry mark {mark:#x}, the mark of tproxy {name}: their packets are routed \
                 to its TPROXY port, a proxy's own included (a loop); give the proxy a routing mark no tproxy uses"
            );
            if self.warned.insert((id, mark)) {
                warn!(cgroup = %path, mark, "{text}");
            }
            if !self.findings.contains(&text) {
                self.findings.push(text);
            }
        }
    }
}

/// The cgroups (known to the tracker) of the listeners, with what they serve.
fn resolve(tracker: &Tracker, listeners: &[SockInfo]) -> BTreeMap<u64, Found> {
    let mut out: BTreeMap<u64, Found> = BTreeMap::new();
    let wanted: BTreeSet<u64> = listeners.iter().filter_map(|l| l.cgroup).collect();
    // id -> path: pins first, else one pass over the known paths.
    let mut paths: BTreeMap<u64, Arc<str>> =
        tracker.pins.iter().filter(|(id, _)| wanted.contains(id)).map(|(id, p)| (*id, p.clone())).collect();
    if paths.len() < wanted.len() {
        for (p, id) in &tracker.paths {
            if wanted.contains(id) {
                paths.insert(*id, p.clone());
            }
        }
    }
    for l in listeners {
        let Some(id) = l.cgroup else { continue };
        // The root cgroup, or one outside the tree cgtproxy watches.
        let Some(path) = paths.get(&id) else { continue };
        let port = l.local.port();
        for t in tracker.cfg.tproxies.values().filter(|t| t.port == port) {
            let serves = format!("tproxy {} ({} port {port})", t.name, l.proto);
            let f = out.entry(id).or_insert_with(|| Found {
                path: path.clone(),
                serves: BTreeSet::new(),
                trusted: None,
                untrusted_uids: BTreeSet::new(),
            });
            f.serves.insert(serves);
            match trusted_socket(l) {
                Some(why) if f.trusted.is_none() => f.trusted = Some(why),
                Some(_) => {}
                None => {
                    f.untrusted_uids.insert(l.uid);
                }
            }
        }
    }
    for f in out.values_mut() {
        if f.trusted.is_none()
            && let Some(p) = tracker.cfg.proxy_cgroup(&f.path)
        {
            f.trusted = Some(format!("its cgroup matches proxy-cgroups[{}] `{}`", p.index, p.pattern));
        }
    }
    out
}

/// Why this listener may exempt its cgroup, if it may: it is transparent
/// (IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW, and only a
/// transparent socket receives what TPROXY diverts), or, on kernels that
/// do not report transparency (before 5.10), root owns it. A socket any
/// user can open on the port number earns nothing.
pub fn trusted_socket(l: &SockInfo) -> Option<String> {
    match l.transparent {
        Some(true) => Some(format!("a transparent socket, uid {}", l.uid)),
        Some(false) => None,
        None if l.uid == 0 => Some("a socket of root; this kernel does not report IP_TRANSPARENT".to_owned()),
        None => None,
    }
}
