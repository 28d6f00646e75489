//! GetPreferredAllocation: a deterministic choice kubelet may take as advice.
//!
//! `must_include` first; then devices on the NUMA node(s) of those (or, with none given, on the
//! NUMA node offering the most); then packed onto as few PFs as possible (PFs already used
//! first, then the PF with most devices on offer); then the lowest address.

use crate::host::{Device, Host};
use std::collections::{BTreeMap, BTreeSet};

pub fn preferred(
    host: &Host,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::new();
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    let mut rest: BTreeSet<&str> = available
        .iter()
        .map(String::as_str)
        .filter(|id| !chosen.iter().any(|c| c == id))
        .collect();

    let numa = |id: &str| host.device(id).and_then(|d| d.numa_node());
    // The PF a device hangs off: a VF's physfn, an SF's parent; a PF is its own.
    let pf = |id: &str| -> String {
        match host.device(id) {
            Some(Device::Pci(f)) => f.physfn.as_ref().map(|p| p.address.clone()),
            Some(Device::Aux(a)) => Some(a.parent.clone()),
            None => None,
        }
        .unwrap_or_else(|| id.to_string())
    };

    let wanted_numa: BTreeSet<Option<u32>> = if chosen.is_empty() {
        let mut counts: BTreeMap<Option<u32>, usize> = BTreeMap::new();
        for id in &rest {
            *counts.entry(numa(id)).or_default() += 1;
        }
        // Most devices on offer; ties to the lowest node.
        counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| *n)
            .into_iter()
            .collect()
    } else {
        chosen.iter().map(|id| numa(id)).collect()
    };

    let mut offered_per_pf: BTreeMap<String, usize> = BTreeMap::new();
    for id in &rest {
        *offered_per_pf.entry(pf(id)).or_default() += 1;
    }

    while chosen.len() < size && !rest.is_empty() {
        let used_pfs: BTreeSet<String> = chosen.iter().map(|id| pf(id)).collect();
        let best = *rest
            .iter()
            .min_by_key(|id| {
                let p = pf(id);
                (
                    !wanted_numa.contains(&numa(id)),
                    !used_pfs.contains(&p),
                    std::cmp::Reverse(offered_per_pf.get(&p).copied().unwrap_or(0)),
                    p,
                    id.to_string(),
                )
            })
            .expect("rest is not empty");
        rest.remove(best);
        chosen.push(best.to_string());
    }
    chosen
}
