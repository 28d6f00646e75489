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
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    for id in must_include {
        if taken.insert(id) {
            chosen.push(id.clone());
        }
    }

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
    // Each device looked up once: (id, NUMA node, PF).
    let rest: Vec<(&str, Option<u32>, String)> = available
        .iter()
        .map(String::as_str)
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .filter(|id| !taken.contains(id))
        .map(|id| (id, numa(id), pf(id)))
        .collect();

    let wanted_numa: BTreeSet<Option<u32>> = if chosen.is_empty() {
        let mut counts: BTreeMap<Option<u32>, usize> = BTreeMap::new();
        for (_, n, _) in &rest {
            *counts.entry(*n).or_default() += 1;
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

    let mut offered_per_pf: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, p) in &rest {
        *offered_per_pf.entry(p.as_str()).or_default() += 1;
    }

    // The choice, device by device, is: wanted NUMA node first; then PFs already used, then
    // the PF with most devices on offer, then the lowest PF and address. A PF once used keeps
    // being preferred, so its devices come out together: two sorts give the same order as
    // picking the best one at a time, in O(n log n).
    let mut used_pfs: BTreeSet<String> = chosen.iter().map(|id| pf(id)).collect();
    let (mut near, mut far): (Vec<_>, Vec<_>) =
        rest.iter().partition(|(_, n, _)| wanted_numa.contains(n));
    for group in [&mut near, &mut far] {
        if chosen.len() >= size {
            break;
        }
        group.sort_by_cached_key(|(id, _, p)| {
            (
                !used_pfs.contains(p),
                std::cmp::Reverse(offered_per_pf.get(p.as_str()).copied().unwrap_or(0)),
                p.clone(),
                id.to_string(),
            )
        });
        for (id, _, p) in group.iter() {
            if chosen.len() >= size {
                break;
            }
            chosen.push(id.to_string());
            used_pfs.insert(p.clone());
        }
    }
    chosen
}
