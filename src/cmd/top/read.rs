//! Reading the world for `top` once per refresh: the cgroup tree, one
//! sock_diag dump of every TCP (with tcp_info) and UDP socket, the
//! per-target rule counters and, with `counters: true`, the per-cgroup
//! element counters. The kernel's table needs CAP_NET_ADMIN; without it the
//! classification is the config's and the counters are left out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::model::{Class, World};
use crate::cgroup::{self, Cgroup};
use crate::cmd::world::{InspectError, privileged, scan};
use crate::config::Config;
use crate::names::{CHAIN_FLOW_DIRECT, CHAIN_FLOW_DROP, CHAIN_OUTPUT, tproxy_chain};
use crate::nft::Nft;
use crate::nft::sys::NFPROTO_INET;
use crate::ruleset::{L4, Ruleset, Stmt, Verdict};
use crate::sockdiag::{ALL_STATES, SockDiag, SockDiagError};

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("reading sockets for top: {0}")]
    SockDiag(#[from] SockDiagError),
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
}

/// What stays open between refreshes: the netlink sockets and the config.
pub struct Reader<'a> {
    cfg: &'a Config,
    root: PathBuf,
    nft: Nft,
    diag: SockDiag,
    /// The rules of `output-mangle` as the config builds them: the kernel's
    /// counters are matched to targets by position.
    output_rules: Vec<Stmt>,
    start: std::time::Instant,
}

impl<'a> Reader<'a> {
    pub fn open(cfg: &'a Config) -> Result<Self, TopError> {
        let root = cgroup::resolve_root(&cfg.cgroup_root).map_err(InspectError::from)?;
        let output_rules = Ruleset::new(cfg)
            .chains()
            .into_iter()
            .find(|c| c.name == CHAIN_OUTPUT)
            .map(|c| c.rules)
            .unwrap_or_default();
        Ok(Reader {
            cfg,
            root,
            nft: Nft::open().map_err(InspectError::from)?,
            diag: SockDiag::open()?,
            output_rules,
            start: std::time::Instant::now(),
        })
    }

    /// One reading of everything.
    pub fn read(&mut self) -> Result<World, TopError> {
        let mut cgroups = scan(&self.root)?;
        // The scan lists what is below the root; sockets of processes in
        // the root itself (kernel threads, containers' init) name it too.
        if let Ok(id) = cgroup::id_of(&self.root) {
            cgroups.push(Cgroup { path: "/".into(), id, level: 0 });
        }
        let mut sockets = Vec::new();
        self.diag.sockets_with_info(L4::Tcp, ALL_STATES, &mut sockets)?;
        match self.diag.sockets_with_info(L4::Udp, ALL_STATES, &mut sockets) {
            // No udp_diag module: TCP only.
            Err(SockDiagError::Netlink(e)) if e.errno() == Some(libc::ENOENT) => {}
            r => r?,
        }
        let (kernel_map, target_counters, kernel_unreadable) = match privileged(self.nft.table_exists())? {
            Ok(false) => (None, BTreeMap::new(), None),
            Ok(true) => {
                (Some(self.nft.cgroup_map_counted().map_err(InspectError::from)?), self.target_counters()?, None)
            }
            Err(why) => (None, BTreeMap::new(), Some(why)),
        };
        let mut cgroup_counters = HashMap::new();
        // The kernel's classification when it can be read, else the config's.
        let elements: HashMap<u64, Verdict> = match kernel_map {
            Some(map) => map
                .into_iter()
                .map(|(id, (v, c))| {
                    if let Some(c) = c {
                        cgroup_counters.insert(id, c);
                    }
                    (id, v)
                })
                .collect(),
            None => Ruleset::build(self.cfg, &cgroups).elements.into_iter().map(|(id, e)| (id, e.verdict)).collect(),
        };
        Ok(World {
            t: self.start.elapsed().as_secs_f64(),
            time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            classes: classes(self.cfg, &cgroups, &elements),
            paths: cgroups.into_iter().map(|c| (c.id, crate::cgname::escape(&c.path).into_owned())).collect(),
            sockets,
            target_counters,
            cgroup_counters,
            daemon: crate::state::read(),
            kernel_unreadable,
            bypass: self.cfg.bypass.iter().map(|c| (c.addr.is_ipv6(), c.range().0, c.range().1)).collect(),
        })
    }

    /// (packets, bytes) per target from the counters of the per-target
    /// rules: `nft list chain inet cgtproxy output-mangle`, the flow
    /// cache's `flow-direct` and `flow-drop` (a cached flow's later
    /// packets) and each tproxy's chain.
    fn target_counters(&mut self) -> Result<BTreeMap<String, (u64, u64)>, TopError> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut add = |target: String, c: (u64, u64)| {
            let t = out.entry(target).or_default();
            t.0 += c.0;
            t.1 += c.1;
        };
        let kernel = self.nft.rule_counters(NFPROTO_INET, CHAIN_OUTPUT).map_err(InspectError::from)?;
        // A daemon with another config (or an older ruleset without these
        // counters) has other rules: count nothing rather than misattribute.
        if kernel.len() == self.output_rules.len() {
            for (stmt, counter) in self.output_rules.iter().zip(kernel) {
                let target = match stmt {
                    Stmt::DirectClass => "direct",
                    Stmt::DropClass => "drop",
                    Stmt::RejectClass { .. } => "reject",
                    _ => continue,
                };
                if let Some(c) = counter {
                    add(target.into(), c);
                }
            }
        }
        for (chain, target) in [(CHAIN_FLOW_DIRECT, "direct"), (CHAIN_FLOW_DROP, "drop")] {
            // Absent without the cache (an empty list).
            if let Some(c) =
                self.nft.rule_counters(NFPROTO_INET, chain).map_err(InspectError::from)?.into_iter().flatten().next()
            {
                add(target.into(), c);
            }
        }
        for t in self.cfg.tproxies.values() {
            let rules = self.nft.rule_counters(NFPROTO_INET, &tproxy_chain(&t.name)).map_err(InspectError::from)?;
            if let Some(c) = rules.into_iter().flatten().next() {
                add(Verdict::Tproxy(t.mark).describe(self.cfg), c);
            }
        }
        Ok(out)
    }
}

/// Each cgroup's class: its own element's, else its nearest ancestor's
/// with one (the `classify` chain looks deepest first).
pub fn classes(cfg: &Config, cgroups: &[Cgroup], elements: &HashMap<u64, Verdict>) -> HashMap<u64, Class> {
    let by_path: HashMap<&str, u64> = cgroups.iter().map(|c| (&*c.path, c.id)).collect();
    let mut out = HashMap::with_capacity(cgroups.len());
    for c in cgroups {
        let mut path: &str = &c.path;
        loop {
            let found = by_path.get(path).and_then(|id| elements.get(id)).filter(|v| **v != Verdict::Continue);
            if let Some(v) = found {
                let tproxy = match v {
                    Verdict::Tproxy(mark) => {
                        cfg.tproxies.values().find(|t| t.mark == *mark).map(|t| (t.no_udp, t.no_ipv6))
                    }
                    _ => None,
                };
                let rule = cfg.classify(path).map(|r| r.index);
                out.insert(c.id, Class { target: v.describe(cfg), rule, tproxy });
                break;
            }
            match path.rsplit_once('/') {
                Some((parent, _)) if !parent.is_empty() => path = parent,
                _ => break,
            }
        }
    }
    out
}
