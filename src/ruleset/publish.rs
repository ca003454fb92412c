//! Classification published to the user's own sets (`nft-set` on a rule):
//! which cgroup ids each set should hold, as a value.

use std::collections::{BTreeMap, BTreeSet};

use super::tails::Tails;
use super::verdict::Element;
use crate::config::{Config, NftSetRef};

/// The ids each published set should hold: the cgroups whose element was
/// chosen by a rule naming the set, or whose rule tail (conditional rules)
/// has such a rule. Empty when no rule has `nft-set`.
pub fn published(cfg: &Config, elements: &BTreeMap<u64, Element>, tails: &Tails) -> BTreeMap<NftSetRef, BTreeSet<u64>> {
    // Runs after every event batch: no allocation per element. Each rule's
    // sets as indices into `sets`; ids come in ascending order (the map's),
    // so each list is sorted and a set is built from it in one pass.
    let sets: Vec<&NftSetRef> = {
        let all: BTreeSet<&NftSetRef> = cfg.rules.iter().flat_map(|r| &r.nft_sets).collect();
        all.into_iter().collect()
    };
    if sets.is_empty() {
        return BTreeMap::new();
    }
    let per_rule: Vec<Vec<usize>> = cfg
        .rules
        .iter()
        .map(|r| r.nft_sets.iter().filter_map(|s| sets.iter().position(|x| *x == s)).collect())
        .collect();
    let mut ids: Vec<Vec<u64>> = vec![Vec::new(); sets.len()];
    for (id, e) in elements {
        let rules: &[u32] = match tails.rules_of(e.verdict) {
            Some(tail) => tail,
            None => match &e.rule {
                Some(i) => std::slice::from_ref(i),
                None => continue,
            },
        };
        for &r in rules {
            for &s in per_rule.get(r as usize).map_or(&[][..], Vec::as_slice) {
                if ids[s].last() != Some(id) {
                    ids[s].push(*id);
                }
            }
        }
    }
    sets.into_iter().cloned().zip(ids.into_iter().map(BTreeSet::from_iter)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Verdict;

    #[test]
    fn a_set_holds_the_cgroups_its_rules_classified() {
        let cfg = Config::parse(
            "version: 1\nrules:\n  - {match: '^/b', direct: true, nft-set: [inet:filter:browsers, ip:t:all]}\n  \
             - {match: '^/x', drop: true, nft-set: ip:t:all}\n  - {match: '^/y', direct: true}\n",
            "t.yaml",
        )
        .unwrap();
        let e = |rule| Element { level: 1, verdict: Verdict::Direct, rule };
        let elements = BTreeMap::from([(1, e(Some(0))), (2, e(Some(1))), (3, e(Some(2))), (4, e(None))]);
        let p = published(&cfg, &elements, &Tails::default());
        let names: Vec<String> = p.keys().map(ToString::to_string).collect();
        assert_eq!(names, ["inet:filter:browsers", "ip:t:all"]);
        assert_eq!(p.values().cloned().collect::<Vec<_>>(), [BTreeSet::from([1]), BTreeSet::from([1, 2])]);
        assert!(published(&Config::builtin_default(), &elements, &Tails::default()).is_empty());
    }
}
