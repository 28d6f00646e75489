//! GetPreferredAllocation's choice, on a generated host: 4 PFs x 4 VFs, PFs 0-1 on NUMA 0
//! (buses 01, 02), PFs 2-3 on NUMA 1 (buses 81, 82).

use nicplug::fixture;
use nicplug::host::{self, Host};
use nicplug::serve::preferred;

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
