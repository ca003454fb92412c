//! `cgtproxy explain PATH|PID`: which rule matches a cgroup and why, and
//! what the kernel holds for it. [`read`] gathers the facts; [`render`]
//! puts them next to the config.

use std::fmt::Write;
use std::path::Path;

use super::world::{InspectError, netns_note, privileged};
use crate::cgroup;
use crate::config::Config;
use crate::nft::Nft;
use crate::ruleset::{Verdict, path_view};
use crate::state::{self, DaemonState};

/// What `explain` learns from the world about one cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Relative to the cgroup root, starting with `/`.
    pub path: String,
    /// None: the cgroup does not exist now.
    pub id: Option<u64>,
    pub daemon: Option<DaemonState>,
    pub netns_note: Option<String>,
    pub kernel: Kernel,
}

/// The kernel's side of an explanation.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    /// Why it could not be read (no CAP_NET_ADMIN).
    Unreadable(String),
    Absent,
    /// `own`: the cgroup's element; `effective`: the deepest
    /// ancestor-or-self whose element decides, with its path.
    Classified {
        own: Option<Verdict>,
        effective: Option<(String, Verdict)>,
    },
}

/// Resolve `explain`'s argument to a cgroup path relative to the root.
pub fn resolve_target(target: &str, root: &Path) -> Result<String, InspectError> {
    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        let file = format!("/proc/{target}/cgroup");
        let text = std::fs::read(&file).map_err(|e| InspectError::Target(format!("PID {target}: {file}: {e}")))?;
        // The path is bytes: its components become path strings as the
        // daemon makes them.
        return text
            .split(|b| *b == b'\n')
            .find_map(|l| l.strip_prefix(b"0::"))
            .map(|p| {
                let mut s = String::new();
                for name in p.split(|b| *b == b'/').filter(|n| !n.is_empty()) {
                    s.push('/');
                    crate::cgname::push_name(&mut s, name);
                }
                if s.is_empty() { "/".to_owned() } else { s }
            })
            .ok_or_else(|| InspectError::Target(format!("PID {target}: no cgroup v2 entry in {file}")));
    }
    let path = Path::new(target);
    if let Some(rel) = cgroup::relative_path(root, path).filter(|_| path.starts_with(root)) {
        return Ok(if rel.is_empty() { "/".into() } else { rel });
    }
    if target.starts_with('/') {
        return Ok(target.trim_end_matches('/').to_owned());
    }
    Err(InspectError::Target(format!("{target:?} is not a PID, nor a cgroup path starting with /")))
}

/// Read the world for `explain TARGET`.
pub fn read(cfg: &Config, target: &str) -> Result<Facts, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let path = resolve_target(target, &root)?;
    let id = cgroup::id_of(&cgroup::dir_of(&root, &path)).ok();
    let daemon = state::read();
    let netns_note = netns_note(daemon.as_ref(), crate::netns::own());
    let mut nft = Nft::open()?;
    let kernel = match privileged(nft.table_exists())? {
        Err(why) => Kernel::Unreadable(why),
        Ok(false) => Kernel::Absent,
        Ok(true) => {
            // The kernel's answer: the deepest ancestor-or-self with an element.
            let map = nft.cgroup_map()?;
            let mut own = None;
            let mut effective = None;
            let mut p = path.clone();
            loop {
                if let Ok(cid) = cgroup::id_of(&cgroup::dir_of(&root, &p))
                    && let Some(v) = map.get(&cid)
                {
                    if p == path {
                        own = Some(*v);
                    }
                    if *v != Verdict::Continue {
                        effective = Some((p.clone(), *v));
                        break;
                    }
                }
                match p.rfind('/') {
                    Some(0) | None => break,
                    Some(i) => p.truncate(i),
                }
            }
            Kernel::Classified { own, effective }
        }
    };
    Ok(Facts { path, id, daemon, netns_note, kernel })
}

/// The text `explain` prints.
pub fn render(cfg: &Config, f: &Facts) -> String {
    let mut s = String::new();
    let path = &f.path;
    let shown = crate::cgname::escape(path);
    match f.id {
        Some(id) => {
            let _ = writeln!(s, "cgroup {shown} (id {id}, level {})", cgroup::level_of(path));
        }
        None => {
            let _ = writeln!(s, "cgroup {shown} (does not exist now; matching the path anyway)");
        }
    }
    let view = path_view::view(cfg, path);
    match cfg.classify(path) {
        Some(rule) => {
            let m = rule.regex.find(path).expect("classify matched");
            let _ = writeln!(
                s,
                "rule {} (line {} of {}): {:?} matches {:?} at {}..{} -> {}",
                rule.index,
                rule.line,
                cfg.origin,
                rule.pattern,
                m.as_str(),
                m.start(),
                m.end(),
                rule.target
            );
            if rule.index > 0 {
                let _ = writeln!(s, "  (rules 0..{} do not match)", rule.index - 1);
            }
            if let Some(tail) = view.describe(cfg) {
                let _ = writeln!(s, "packets: {tail}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "no rule matches ({} rules tried): the cgroup follows its nearest classified ancestor, else goes direct",
                cfg.rules.len()
            );
        }
    }
    render_bound(&mut s, cfg, path, &view);
    if let Some(note) = &f.netns_note {
        let _ = writeln!(s, "NOTE: {note}");
    }
    // The proxy-loop guard overrides the rules for a proxy's own cgroup.
    let needle = format!("cgroup {shown},");
    let needle_colon = format!("cgroup {shown}:");
    let needle_on = format!("cgroup {shown} on ");
    for line in f.daemon.iter().flat_map(|d| &d.guard) {
        if line.contains(&needle) || line.contains(&needle_colon) || line.contains(&needle_on) {
            // The state file is outside our control: shown escaped too.
            let _ = writeln!(s, "proxy guard: {}", crate::cgname::escape(line));
        }
    }
    let (own, effective) = match &f.kernel {
        Kernel::Unreadable(why) => {
            let _ = writeln!(s, "kernel: not shown: {why}");
            return s;
        }
        Kernel::Absent => {
            s.push_str("kernel: table inet cgtproxy is absent: traffic is not classified\n");
            return s;
        }
        Kernel::Classified { own, effective } => (own, effective),
    };
    match own {
        Some(v) => {
            let _ = writeln!(s, "kernel: cgroup-class holds {:#010x} ({}) for it", v.class(), v.describe(cfg));
        }
        None => s.push_str("kernel: cgroup-class holds nothing for it\n"),
    }
    match effective {
        Some((p, v)) if p == path => {
            let _ = writeln!(s, "effective: {}", v.describe(cfg));
        }
        Some((p, v)) => {
            let _ = writeln!(s, "effective: {} (inherited from {})", v.describe(cfg), crate::cgname::escape(p));
        }
        None => s.push_str("effective: direct (no classified ancestor)\n"),
    }
    if let Some((_, crate::ruleset::Verdict::Tproxy(mark))) = effective
        && let Some(t) = cfg.tproxies.values().find(|t| t.mark == *mark)
    {
        let fate =
            if t.other_direct { "sent directly (other-protocols: direct)" } else { "dropped (other-protocols: drop)" };
        let _ = writeln!(s, "other protocols (ICMP, raw sockets, SCTP...): {fate}");
    }
    s
}

/// What the ancestors of `path` impose on it: one whose rules hold for
/// everything below it, or the drop and reject rules of conditional ones,
/// which come first for every cgroup below them.
fn render_bound(s: &mut String, cfg: &Config, path: &str, view: &path_view::PathView<'_>) {
    if let Some(end) = view.whole {
        let ancestor = &path[..end];
        let Some(rule) = cfg.classify(ancestor) else { return };
        let shown = crate::cgname::escape(ancestor);
        match path_view::view(cfg, ancestor).describe(cfg) {
            None => {
                let _ = writeln!(
                    s,
                    "bound: its ancestor {shown} matches rule {} (line {}) -> {}, which holds for everything below \
                     it: this cgroup is {} too, whatever rule its own name matches",
                    rule.index, rule.line, rule.target, rule.target
                );
            }
            Some(rules) => {
                let _ = writeln!(
                    s,
                    "bound: its ancestor {shown} (rule {}, line {}) ends in {}, which holds for everything below it: \
                     this cgroup's packets go as its ancestor's, whatever rule its own name matches: {rules}",
                    rule.index,
                    rule.line,
                    view.rules.last().map_or_else(|| rule.target.to_string(), |r| r.target.to_string())
                );
            }
        }
        return;
    }
    for (end, rule) in &view.inherited {
        let what = rule.conditions.as_ref().map_or_else(|| "all packets".to_owned(), |c| c.describe());
        let _ = writeln!(
            s,
            "bound: its ancestor {} has rule {} (line {}): {what} -> {}, which comes first for everything below it, \
             this cgroup too",
            crate::cgname::escape(&path[..*end]),
            rule.index,
            rule.line,
            rule.target
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "version: 1\ntproxies:\n  p: {mark: 7, port: 7893}\nrules:\n  - {match: '^/a$', direct: true}\n  - {match: '^/a/b', tproxy: p}\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn an_inherited_verdict_is_explained_with_its_rule_and_ancestor() {
        let f = Facts {
            path: "/a/b/c".into(),
            id: Some(42),
            daemon: None,
            netns_note: None,
            kernel: Kernel::Classified { own: None, effective: Some(("/a/b".into(), Verdict::Tproxy(7))) },
        };
        assert_eq!(
            render(&cfg(), &f),
            "cgroup /a/b/c (id 42, level 3)\n\
             rule 1 (line 6 of t.yaml): \"^/a/b\" matches \"/a/b\" at 0..4 -> tproxy p\n  (rules 0..0 do not match)\n\
             kernel: cgroup-class holds nothing for it\neffective: tproxy p (inherited from /a/b)\n\
             other protocols (ICMP, raw sockets, SCTP...): dropped (other-protocols: drop)\n"
        );
    }

    #[test]
    fn a_child_of_a_dropped_cgroup_is_explained_as_bound_and_names_are_escaped() {
        let cfg = Config::parse(
            "version: 1\nrules:\n  - {match: '^/d$', drop: true}\n  - {match: x, direct: true}\n",
            "t.yaml",
        )
        .unwrap();
        let f = Facts {
            path: "/d/x\x1b[2J\r".into(),
            id: None,
            daemon: None,
            netns_note: None,
            kernel: Kernel::Unreadable("needs CAP_NET_ADMIN".into()),
        };
        let text = render(&cfg, &f);
        assert!(text.starts_with("cgroup /d/x\\x1b[2J\\x0d (does not exist"), "{text}");
        assert!(text.contains("bound: its ancestor /d matches rule 0 (line 3) -> drop"), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    }

    #[test]
    fn ancestors_with_conditions_are_explained_as_bound() {
        let cfg = Config::parse(
            "version: 1\nrules:\n  - {match: '^/q$', protocol: udp, port: 443, reject: true}\n  \
             - {match: '^/q$', direct: true}\n  - {match: '^/w$', protocol: tcp, direct: true}\n  \
             - {match: '^/w$', drop: true}\n  - {match: 'x$', direct: true}\n",
            "t.yaml",
        )
        .unwrap();
        let facts = |path: &str| Facts {
            path: path.into(),
            id: None,
            daemon: None,
            netns_note: None,
            kernel: Kernel::Unreadable("needs CAP_NET_ADMIN".into()),
        };
        let text = render(&cfg, &facts("/q/x"));
        assert!(
            text.contains(
                "bound: its ancestor /q has rule 0 (line 3): udp dport 443 -> reject, which comes first for \
                 everything below it, this cgroup too"
            ),
            "{text}"
        );
        assert!(text.contains("packets: udp dport 443 → reject (rule 0); everything else → direct (rule 4)"), "{text}");
        let text = render(&cfg, &facts("/w/x"));
        assert!(
            text.contains(
                "bound: its ancestor /w (rule 2, line 5) ends in drop, which holds for everything below it: this \
                 cgroup's packets go as its ancestor's, whatever rule its own name matches: tcp → direct (rule 2); \
                 everything else → drop (rule 3)"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_kernel_is_said_and_nothing_more() {
        let f = Facts {
            path: "/x".into(),
            id: None,
            daemon: None,
            netns_note: None,
            kernel: Kernel::Unreadable("needs CAP_NET_ADMIN".into()),
        };
        let text = render(&cfg(), &f);
        assert!(text.starts_with("cgroup /x (does not exist now; matching the path anyway)\nno rule matches (2 rules"));
        assert!(text.ends_with("kernel: not shown: needs CAP_NET_ADMIN\n"), "{text}");
    }
}
