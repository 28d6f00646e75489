//! GetPreferredAllocation's choice, on a generated host: 4 PFs x 4 VFs, PFs 0-1 on NUMA 0
//! (buses 01, 02), PFs 2-3 on NUMA 1 (buses 81, 82).

use nicplug::fixture;
use nicplug::host::{self, Host};
use nicplug::inventory::preferred;

fn host() -> (tempfile::TempDir, Host) {
    let tmp = tempfile::tempdir().unwrap();
    let paths = fixture::materialize(&fixture::generated(4, 4), tmp.path()).unwrap();
    (tmp, host::discover(&paths).unwrap())
}

fn vfs(host: &Host) -> Vec<String> {
    host.functions
        .iter()
        .filter(|f| f.is_vf())
        .map(|f| f.address.clone())
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn packs_onto_one_pf_and_lowest_addresses() {
    let (_t, h) = host();
    let got = preferred(&h, &vfs(&h), &[], 3);
    assert_eq!(got, s(&["0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]));
}

#[test]
fn must_include_comes_first_and_pulls_its_numa_node_and_pf() {
    let (_t, h) = host();
    let got = preferred(&h, &vfs(&h), &s(&["0000:82:00.3"]), 3);
    assert_eq!(got, s(&["0000:82:00.3", "0000:82:00.1", "0000:82:00.2"]));
}

#[test]
fn spills_to_a_second_pf_on_the_same_numa_node_before_another_node() {
    let (_t, h) = host();
    // Two VFs left on PF 81, four on PF 82 (same NUMA node 1), all of NUMA 0 on offer too.
    let available: Vec<String> = vfs(&h)
        .into_iter()
        .filter(|id| !["0000:81:00.1", "0000:81:00.2"].contains(&id.as_str()))
        .collect();
    let got = preferred(&h, &available, &s(&["0000:81:00.3"]), 5);
    assert_eq!(
        got,
        s(&[
            "0000:81:00.3",
            "0000:81:00.4",
            "0000:82:00.1",
            "0000:82:00.2",
            "0000:82:00.3"
        ])
    );
}

#[test]
fn prefers_the_pf_with_most_on_offer() {
    let (_t, h) = host();
    let available = s(&[
        "0000:01:00.1",
        "0000:02:00.1",
        "0000:02:00.2",
        "0000:02:00.3",
    ]);
    assert_eq!(
        preferred(&h, &available, &[], 2),
        s(&["0000:02:00.1", "0000:02:00.2"])
    );
}

#[test]
fn deterministic_whatever_the_input_order() {
    let (_t, h) = host();
    let mut available = vfs(&h);
    let a = preferred(&h, &available, &[], 6);
    available.reverse();
    let b = preferred(&h, &available, &[], 6);
    assert_eq!(a, b);
    assert_eq!(a.len(), 6);
}

#[test]
fn never_more_than_available_and_no_duplicates() {
    let (_t, h) = host();
    let available = s(&["0000:01:00.1", "0000:01:00.2"]);
    let got = preferred(&h, &available, &s(&["0000:01:00.1", "0000:01:00.1"]), 5);
    assert_eq!(got, s(&["0000:01:00.1", "0000:01:00.2"]));
}

/// The rule as stated, one device at a time (quadratic): the fast implementation must choose
/// exactly the same devices in the same order.
fn one_at_a_time(h: &Host, available: &[String], must: &[String], size: usize) -> Vec<String> {
    use nicplug::host::Device;
    use std::collections::{BTreeMap, BTreeSet};
    let mut chosen: Vec<String> = Vec::new();
    for id in must {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    let mut rest: BTreeSet<&str> = available
        .iter()
        .map(String::as_str)
        .filter(|id| !chosen.iter().any(|c| c == id))
        .collect();
    let numa = |id: &str| h.device(id).and_then(|d| d.numa_node());
    let pf = |id: &str| {
        match h.device(id) {
            Some(Device::Pci(f)) => f.physfn.as_ref().map(|p| p.address.clone()),
            Some(Device::Aux(a)) => Some(a.parent.clone()),
            None => None,
        }
        .unwrap_or_else(|| id.to_string())
    };
    let wanted: BTreeSet<Option<u32>> = if chosen.is_empty() {
        let mut counts: BTreeMap<Option<u32>, usize> = BTreeMap::new();
        for id in &rest {
            *counts.entry(numa(id)).or_default() += 1;
        }
        counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| *n)
            .into_iter()
            .collect()
    } else {
        chosen.iter().map(|id| numa(id)).collect()
    };
    let mut offered: BTreeMap<String, usize> = BTreeMap::new();
    for id in &rest {
        *offered.entry(pf(id)).or_default() += 1;
    }
    while chosen.len() < size && !rest.is_empty() {
        let used: BTreeSet<String> = chosen.iter().map(|id| pf(id)).collect();
        let best = *rest
            .iter()
            .min_by_key(|id| {
                let p = pf(id);
                (
                    !wanted.contains(&numa(id)),
                    !used.contains(&p),
                    std::cmp::Reverse(offered.get(&p).copied().unwrap_or(0)),
                    p,
                    id.to_string(),
                )
            })
            .unwrap();
        rest.remove(best);
        chosen.push(best.to_string());
    }
    chosen
}

/// One host for every case (materializing it is the slow part).
fn shared_host() -> &'static Host {
    static HOST: std::sync::OnceLock<(tempfile::TempDir, Host)> = std::sync::OnceLock::new();
    &HOST.get_or_init(host).1
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn same_choice_as_one_device_at_a_time(
        offer in proptest::collection::vec(proptest::bool::ANY, 16),
        must in proptest::collection::vec(0usize..16, 0..3),
        size in 0usize..18,
    ) {
        let h = shared_host();
        let all = vfs(h);
        let available: Vec<String> =
            all.iter().zip(&offer).filter(|(_, o)| **o).map(|(id, _)| id.clone()).collect();
        let must: Vec<String> = must.iter().map(|i| all[*i].clone()).collect();
        proptest::prop_assert_eq!(
            preferred(h, &available, &must, size),
            one_at_a_time(h, &available, &must, size)
        );
    }
}
