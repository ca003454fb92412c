//! `cgtproxy print [--diff]`: the nft ruleset for the cgroups of now, and
//! with `--diff` the kernel's table against it. [`read_kernel`] reads the
//! kernel's map and level rules into a ruleset; [`line_diff`] compares the
//! two renderings.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::world::{InspectError, scan};
use crate::cgroup::{self, Cgroup};
use crate::config::Config;
use crate::names::TAIL_BASE;
use crate::nft::Nft;
use crate::ruleset::{Element, Ruleset, Verdict};

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
        let daemon_tails = crate::state::read().map(|d| d.tails).unwrap_or_default();
        let mut unknown = Vec::new();
        for (id, verdict) in nft.cgroup_map()? {
            let verdict = same_tail(verdict, &daemon_tails, &want.tails.list, &mut unknown);
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

/// A kernel element's class as the fresh build numbers it. Tail classes
/// are numbered in the order the daemon met them (`kernel`, from its state
/// file), a fresh build in tree order: the same rules get the build's
/// number; rules the build has no tail for get numbers after its own
/// (`unknown` keeps them), so the element shows as a difference.
pub fn same_tail(v: Verdict, kernel: &[Vec<u32>], want: &[Vec<u32>], unknown: &mut Vec<Vec<u32>>) -> Verdict {
    let Verdict::Tail(class) = v else { return v };
    let Some(rules) = kernel.get(class.wrapping_sub(TAIL_BASE) as usize) else { return v };
    let n = match want.iter().position(|t| t == rules) {
        Some(n) => n,
        None => {
            let k = unknown.iter().position(|t| t == rules).unwrap_or_else(|| {
                unknown.push(rules.clone());
                unknown.len() - 1
            });
            want.len() + k
        }
    };
    Verdict::Tail(TAIL_BASE.saturating_add(n as u32))
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
    use super::{line_diff, same_tail};
    use crate::names::TAIL_BASE;
    use crate::ruleset::Verdict;

    #[test]
    fn kernel_tails_are_compared_by_their_rules_not_their_numbers() {
        let kernel = vec![vec![2, 3], vec![0, 1], vec![5, 6]];
        let want = vec![vec![0, 1], vec![2, 3]];
        let mut unknown = Vec::new();
        let mut map = |c: u32| same_tail(Verdict::Tail(TAIL_BASE + c), &kernel, &want, &mut unknown);
        assert_eq!(map(0), Verdict::Tail(TAIL_BASE + 1));
        assert_eq!(map(1), Verdict::Tail(TAIL_BASE));
        // Rules the fresh build has no tail for: a number of their own.
        assert_eq!(map(2), Verdict::Tail(TAIL_BASE + 2));
        assert_eq!(map(2), Verdict::Tail(TAIL_BASE + 2));
        // No state file (or an older one): as the kernel says.
        assert_eq!(map(7), Verdict::Tail(TAIL_BASE + 7));
        assert_eq!(same_tail(Verdict::Drop, &kernel, &want, &mut Vec::new()), Verdict::Drop);
    }

    #[test]
    fn only_changed_lines_are_shown_and_list_commas_do_not_count() {
        assert_eq!(line_diff("a\nb,\n", "a\nb,\n"), None);
        assert_eq!(line_diff("a\nb,\n", "a\nb\n"), None);
        assert_eq!(line_diff("a\nb\n", "a\nc\n").unwrap(), "--- kernel\n+++ config\n-b\n+c\n");
    }
}
