//! `cgtproxy print [--diff]`: the nft ruleset for the cgroups of now, and
//! with `--diff` the kernel's table against it. [`read_kernel`] reads the
//! kernel's map and level rules into a ruleset; [`line_diff`] compares the
//! two renderings.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::world::{InspectError, scan};
use crate::cgroup::{self, Cgroup};
use crate::config::Config;
use crate::nft::Nft;
use crate::ruleset::{Element, Ruleset};

/// The ruleset for the cgroups of now, as `nft -f` text.
pub fn render_now(cfg: &Config) -> Result<String, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let cgroups = scan(&root)?;
    let rs = Ruleset::build(cfg, &cgroups);
    Ok(rs.render_for_nft(&root, &cgroups).unwrap_or_else(|| {
        format!(
            "# cgroup2 is mounted at {}, not below /sys/fs/cgroup, where nft looks up cgroupsv2 elements:\n\
             # `nft -f` cannot load the paths below (the daemon programs cgroup ids and is not affected).\n{}",
            root.display(),
            rs.render(&cgroups)
        )
    }))
}

/// `print --diff`: the map and the level rules as the kernel holds them
/// against what the config wants now, as `-`/`+` lines of the rendered
/// ruleset. Returns None when they agree.
pub fn diff(cfg: &Config) -> Result<Option<String>, InspectError> {
    let root = cgroup::resolve_root(&cfg.cgroup_root)?;
    let cgroups = scan(&root)?;
    let want = Ruleset::build(cfg, &cgroups);
    let mut nft = Nft::open()?;
    let have_text = if nft.table_exists()? {
        let by_id: HashMap<u64, &Cgroup> = cgroups.iter().map(|c| (c.id, c)).collect();
        let mut have = want.clone();
        have.elements.clear();
        let mut named = cgroups.clone();
        for (id, verdict) in nft.cgroup_map()? {
            let level = match by_id.get(&id) {
                Some(c) => c.level,
                None => {
                    named.push(Cgroup { path: format!("#{id} (gone)").into(), id, level: 0 });
                    0
                }
            };
            have.elements.insert(id, Element { level, verdict, rule: None });
        }
        have.levels = nft.level_handles()?.into_keys().collect();
        have.render(&named)
    } else {
        String::new()
    };
    Ok(line_diff(&have_text, &want.render(&cgroups)))
}

/// The lines only one of two renderings has, as `-` (kernel) and `+`
/// (config); None when they agree.
pub fn line_diff(have_text: &str, want_text: &str) -> Option<String> {
    if have_text == want_text {
        return None;
    }
    // Compare lines without list commas: the last element has none.
    let key = |l: &str| l.trim_end_matches(',').to_owned();
    let have_lines: HashSet<String> = have_text.lines().map(key).collect();
    let want_lines: HashSet<String> = want_text.lines().map(key).collect();
    let mut out = String::from("--- kernel\n+++ config\n");
    for l in have_text.lines().filter(|l| !want_lines.contains(&key(l))) {
        let _ = writeln!(out, "-{}", key(l));
    }
    for l in want_text.lines().filter(|l| !have_lines.contains(&key(l))) {
        let _ = writeln!(out, "+{}", key(l));
    }
    (out.lines().count() > 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn only_changed_lines_are_shown_and_list_commas_do_not_count() {
        assert_eq!(line_diff("a\nb,\n", "a\nb,\n"), None);
        assert_eq!(line_diff("a\nb,\n", "a\nb\n"), None);
        assert_eq!(line_diff("a\nb\n", "a\nc\n").unwrap(), "--- kernel\n+++ config\n-b\n+c\n");
    }
}
