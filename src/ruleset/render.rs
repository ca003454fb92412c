//! The ruleset as `nft -f` text, laid out like `nft list table`.

use std::fmt::Write;

use super::model::Ruleset;
use super::stmt_text::{intervals, mark};
use crate::cgroup::Cgroup;
use crate::names::*;

/// What `nft` needs before a cgroup path relative to the cgroup2 mount
/// `root`: nft resolves `cgroupsv2` elements against /sys/fs/cgroup, so on a
/// hybrid host (cgroup2 at /sys/fs/cgroup/unified) that is `unified/`. None
/// when the mount is not below /sys/fs/cgroup (nft cannot resolve it at all).
pub fn nft_cgroup_prefix(root: &std::path::Path) -> Option<String> {
    let rest = root.strip_prefix("/sys/fs/cgroup").ok()?;
    let rest = rest.to_str()?;
    Some(if rest.is_empty() { String::new() } else { format!("{rest}/") })
}

impl Ruleset {
    /// `nft -f` text for this ruleset, cgroup paths relative to the cgroup2
    /// mount; each element's path is its id's in `cgroups`.
    pub fn render(&self, cgroups: &[Cgroup]) -> String {
        render(self, cgroups, "")
    }

    /// `nft -f` text that `nft` can load on this host: cgroup paths relative
    /// to /sys/fs/cgroup (`unified/...` on hybrid hosts), for a cgroup2
    /// mount at `root`. None when nft cannot resolve paths below `root`.
    pub fn render_for_nft(&self, root: &std::path::Path, cgroups: &[Cgroup]) -> Option<String> {
        nft_cgroup_prefix(root).map(|prefix| render(self, cgroups, &prefix))
    }
}

/// `prefix` goes before every cgroup path (see [`nft_cgroup_prefix`]); the
/// paths are those of `cgroups`, by id.
fn render(rs: &Ruleset, cgroups: &[Cgroup], prefix: &str) -> String {
    let paths: std::collections::HashMap<u64, &str> = cgroups.iter().map(|c| (c.id, &*c.path)).collect();
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "table inet {TABLE} {{");
    set(w, SET_BYPASS4, "ipv4_addr", &intervals(&rs.bypass4, false));
    set(w, SET_BYPASS6, "ipv6_addr", &intervals(&rs.bypass6, true));
    if rs.has_local_sets() {
        set(w, SET_LOCAL4, "ipv4_addr", &intervals(&rs.local4, false));
        set(w, SET_LOCAL6, "ipv6_addr", &intervals(&rs.local6, true));
    }
    let cgroups: Vec<String> = rs
        .elements
        .iter()
        .map(|(id, e)| {
            // Every element's cgroup is in `cgroups`; a missing one is shown
            // by id rather than dropped.
            let path = paths.get(id).map_or_else(|| format!("#{id}"), |p| p.trim_start_matches('/').to_owned());
            format!("{:?} : {}", format!("{prefix}{path}"), mark(e.verdict.class()))
        })
        .collect();
    map(w, MAP_CGROUP, if rs.counters { "cgroupsv2 : mark\n\t\tcounter" } else { "cgroupsv2 : mark" }, &cgroups);
    let marks: Vec<String> =
        rs.tproxies.iter().map(|t| format!("{} : goto {}", mark(t.mark), tproxy_chain(&t.name))).collect();
    map(w, MAP_MARK, "mark : verdict", &marks);
    let dns: Vec<String> = rs
        .tproxies
        .iter()
        .filter(|t| t.dns_hijack.is_some())
        .map(|t| format!("{} : goto {}", mark(t.mark), dns_chain(&t.name)))
        .collect();
    map(w, MAP_MARK_DNS, "mark : verdict", &dns);
    // Created after the maps (as `nft list` shows them).
    for name in &rs.dynamic_sets {
        let [v4, v6] = dynamic_sets(name);
        // Filled by other programs; what they added is not the config's.
        let _ = writeln!(
            w,
            "	set {v4} {{
		type ipv4_addr
		flags interval,timeout
	}}
"
        );
        let _ = writeln!(
            w,
            "	set {v6} {{
		type ipv6_addr
		flags interval,timeout
	}}
"
        );
    }
    if rs.flow_mask != 0 {
        let tokens = rs.flow_tokens();
        let by_token: Vec<String> = tokens.iter().map(|&(c, t)| format!("{} : {}", mark(t), mark(c))).collect();
        map(w, MAP_FLOW_CLASS, "mark : mark", &by_token);
        map(w, MAP_FLOW_TOKEN, "mark : mark", &flow_token_items(&tokens));
        let fast: Vec<String> = tokens
            .iter()
            .filter_map(|&(c, t)| match c {
                CLASS_DIRECT => Some(format!("{} : goto {CHAIN_FLOW_DIRECT}", mark(t))),
                CLASS_DROP => Some(format!("{} : goto {CHAIN_FLOW_DROP}", mark(t))),
                _ => None,
            })
            .collect();
        map(w, MAP_FLOW_VERDICT, "mark : verdict", &fast);
    }
    if rs.tails.active() {
        let items: Vec<String> =
            rs.tails.elements_from(0).iter().map(|(c, chain)| format!("{} : jump {chain}", mark(*c))).collect();
        map(w, MAP_TAILS, "mark : verdict", &items);
    }

    for c in rs.chains() {
        let base = c.hook.map(|h| format!("type {} hook {} priority {}", h.kind, h.hook, h.priority_name));
        let rules: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
        chain(w, &c.name, base.as_deref(), &rules);
    }
    // Drop the blank line after the last block.
    o.pop();
    o.push_str("}\n");
    let bridge = rs.bridge_chains();
    if !bridge.is_empty() {
        let w = &mut o;
        let _ = writeln!(w, "table bridge {TABLE} {{");
        set(w, SET_BYPASS4, "ipv4_addr", &intervals(&rs.bypass4, false));
        set(w, SET_BYPASS6, "ipv6_addr", &intervals(&rs.bypass6, true));
        set(w, SET_LOCAL4, "ipv4_addr", &intervals(&rs.local4, false));
        set(w, SET_LOCAL6, "ipv6_addr", &intervals(&rs.local6, true));
        for c in bridge {
            let base = c.hook.map(|h| format!("type {} hook {} priority {}", h.kind, h.hook, h.priority_name));
            let rules: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
            chain(w, &c.name, base.as_deref(), &rules);
        }
        o.pop();
        o.push_str("}\n");
    }
    o
}

/// `flow-token`'s elements as `nft list` sorts them (by key): class 0 (no
/// level decided) is cached as direct.
fn flow_token_items(tokens: &[(u32, u32)]) -> Vec<String> {
    let mut items: Vec<(u32, u32)> = tokens.to_vec();
    if let Some(&(_, direct)) = tokens.iter().find(|(c, _)| *c == CLASS_DIRECT) {
        items.push((0, direct));
    }
    items.sort_unstable();
    items.iter().map(|&(c, t)| format!("{} : {}", mark(c), mark(t))).collect()
}

fn elements(w: &mut String, items: &[String]) {
    match items {
        [] => {}
        [one] => {
            let _ = writeln!(w, "\t\telements = {{ {one} }}");
        }
        many => {
            let _ = writeln!(w, "\t\telements = {{");
            let last = many.len() - 1;
            for (i, item) in many.iter().enumerate() {
                let comma = if i == last { "" } else { "," };
                let _ = writeln!(w, "\t\t\t{item}{comma}");
            }
            let _ = writeln!(w, "\t\t}}");
        }
    }
}

fn set(w: &mut String, name: &str, ty: &str, items: &[String]) {
    let _ = writeln!(w, "\tset {name} {{\n\t\ttype {ty}\n\t\tflags interval");
    elements(w, items);
    let _ = writeln!(w, "\t}}\n");
}

/// `ty` is the `type KEY : DATA` line's text (and any lines after it).
fn map(w: &mut String, name: &str, ty: &str, items: &[String]) {
    let _ = writeln!(w, "\tmap {name} {{\n\t\ttype {ty}");
    elements(w, items);
    let _ = writeln!(w, "\t}}\n");
}

fn chain(w: &mut String, name: &str, base: Option<&str>, rules: &[String]) {
    let _ = writeln!(w, "\tchain {name} {{");
    if let Some(base) = base {
        let _ = writeln!(w, "\t\t{base}; policy accept;");
    }
    for r in rules {
        let _ = writeln!(w, "\t\t{r}");
    }
    let _ = writeln!(w, "\t}}\n");
}
