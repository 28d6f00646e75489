"""Contract point 4: GetPreferredAllocation — must_include first, then the NUMA node of those,
then as few PFs as possible, then the lowest address; deterministic."""

import random

import pytest

from harness import PF0_VFS, VF_POOL
from kubelet import ids_of

# Four dual-port-style PFs with 4 VFs each: two on NUMA 0 (bus 3b), two on NUMA 1 (bus af).
#   3b:00.0 -> 3b:00.2-3b:00.5     3b:00.1 -> 3b:00.6-3b:01.1     (NUMA 0)
#   af:00.0 -> af:00.2-af:00.5     af:00.1 -> af:00.6-af:01.1     (NUMA 1)
SPEC = """
rdma_netns_mode: shared
rdma_cm: {major: 10, minor: 56}
functions:
""" + "".join(f"""
  - address: "0000:{bus}:00.{fn}"
    bridge: "0000:{bridge}:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    numa_node: {numa}
    netdev: {{name: {netdev}}}
    rdma: {{ibdev: mlx5_{k}, uverbs: {k}, umad: {k}}}
    sriov: {{total_vfs: 4, num_vfs: 4}}
    vf_template: {{rdma: {{first: {4 + 4 * k}}}}}
""" for k, (bus, bridge, fn, numa, netdev) in enumerate([
    ("3b", "3a", 0, 0, "ens1f0"), ("3b", "3a", 1, 0, "ens1f1"),
    ("af", "ae", 0, 1, "ens3f0"), ("af", "ae", 1, 1, "ens3f1"),
]))

CONFIG = {"resourceList": [{
    "resourceName": "vfs", "resourcePrefix": "example.com",
    "selectors": {"vendors": ["15b3"], "devices": ["101e"], "drivers": ["mlx5_core"]},
}]}
POOL = "example.com/vfs"

PF = {}
for pf, vfs in {
    "0000:3b:00.0": ["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5"],
    "0000:3b:00.1": ["0000:3b:00.6", "0000:3b:00.7", "0000:3b:01.0", "0000:3b:01.1"],
    "0000:af:00.0": ["0000:af:00.2", "0000:af:00.3", "0000:af:00.4", "0000:af:00.5"],
    "0000:af:00.1": ["0000:af:00.6", "0000:af:00.7", "0000:af:01.0", "0000:af:01.1"],
}.items():
    for vf in vfs:
        PF[vf] = pf
ALL = sorted(PF)


def numa(vf):
    return 0 if vf.startswith("0000:3b") else 1


def min_pfs(available, size):
    """The fewest PFs `size` devices out of `available` can sit on."""
    counts = sorted((sum(1 for a in available if PF[a] == p) for p in set(PF.values())),
                    reverse=True)
    n, total = 0, 0
    for c in counts:
        if total >= size:
            break
        total += c
        n += 1
    return n


@pytest.fixture
def pref(make_node, daemons):
    from kubelet import Kubelet

    node = make_node(spec=SPEC)
    node.write_config(CONFIG)
    k = Kubelet(node.kubelet_dir)
    k.start()
    daemons.start(node)
    try:
        k.wait_registered(POOL, timeout=15)
        assert ids_of(k.devices(POOL)) == ALL, "fixture: every VF advertised"
        yield k
    finally:
        daemons.stop_all()
        k.stop()


def ask(k, available, must, size):
    (got,) = k.preferred(POOL, [(available, must, size)])
    assert len(got) == size, f"asked for {size}, got {got}"
    assert len(set(got)) == size, f"duplicates in {got}"
    assert set(got) <= set(available), f"{got} outside available"
    assert got[:len(must)] == list(must) or set(got[:len(must)]) == set(must), (
        f"must_include {must} not first in {got}")
    return got


def test_must_include_honoured(pref):
    got = ask(pref, ALL, ["0000:af:00.4"], 2)
    # Then its NUMA node, its PF, the lowest address there.
    assert got == ["0000:af:00.4", "0000:af:00.2"]
    got = ask(pref, ALL, ["0000:3b:01.1", "0000:af:01.1"], 2)
    assert set(got) == {"0000:3b:01.1", "0000:af:01.1"}


def test_numa_node_of_must_include_beats_lower_addresses(pref):
    available = ["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5",
                 "0000:af:00.2", "0000:af:00.6"]
    got = ask(pref, available, ["0000:af:00.6"], 2)
    assert got == ["0000:af:00.6", "0000:af:00.2"], "same NUMA node before same PF/lower address"
    got = ask(pref, ALL, ["0000:af:01.0"], 5)
    assert all(numa(d) == 1 for d in got), f"NUMA 1 has enough, yet {got}"


def test_pf_packing(pref):
    # PF 3b:00.0 offers two low addresses, PF 3b:00.1 offers four: three fit on one PF.
    available = ["0000:3b:00.2", "0000:3b:00.3",
                 "0000:3b:00.6", "0000:3b:00.7", "0000:3b:01.0", "0000:3b:01.1"]
    got = ask(pref, available, [], 3)
    assert {PF[d] for d in got} == {"0000:3b:00.1"}, f"not packed on one PF: {got}"
    assert sorted(got) == ["0000:3b:00.6", "0000:3b:00.7", "0000:3b:01.0"], "lowest addresses"
    got = ask(pref, available, [], 5)
    assert len({PF[d] for d in got}) == 2
    assert set(available[2:]) <= set(got)
    # A must_include on a PF pulls the rest onto the same PF.
    got = ask(pref, ALL, ["0000:af:01.0"], 4)
    assert sorted(got) == ["0000:af:00.6", "0000:af:00.7", "0000:af:01.0", "0000:af:01.1"]


def test_pf_packing_randomised(pref):
    rng = random.Random(11)
    for _ in range(40):
        available = sorted(rng.sample(ALL, rng.randint(2, len(ALL))))
        on_numa = {n: [a for a in available if numa(a) == n] for n in (0, 1)}
        size = rng.randint(1, max(len(v) for v in on_numa.values()))
        got = ask(pref, available, [], size)
        if any(len(v) >= size for v in on_numa.values()):
            assert len({numa(d) for d in got}) == 1, (
                f"{size} fit on one NUMA node, yet {got} from {available}")
        pool = [a for a in available if numa(a) == numa(got[0])]
        if len(pool) >= size:
            assert all(numa(d) == numa(got[0]) for d in got), (available, size, got)
            assert len({PF[d] for d in got}) == min_pfs(pool, size), (available, size, got)


def test_lowest_address_on_ties(pref):
    got = ask(pref, ["0000:3b:00.5", "0000:3b:00.3", "0000:3b:00.2", "0000:3b:00.4"], [], 2)
    assert sorted(got) == ["0000:3b:00.2", "0000:3b:00.3"]


def test_deterministic(pref):
    rng = random.Random(3)
    cases = [(ALL, [], 3), (ALL, ["0000:3b:00.7"], 4), (ALL[2:13], ["0000:af:00.3"], 6)]
    for available, must, size in cases:
        first = ask(pref, available, must, size)
        for _ in range(10):
            shuffled = list(available)
            rng.shuffle(shuffled)
            assert ask(pref, shuffled, must, size) == first, (available, must, size)


def test_several_containers_in_one_request(pref):
    got = pref.preferred(POOL, [(ALL, [], 1), (ALL, ["0000:af:00.3"], 2)])
    assert len(got) == 2
    assert len(got[0]) == 1 and got[1][0] == "0000:af:00.3" and len(got[1]) == 2


def test_sample_node_preferred(node, kubelet, serving):
    """The same call on the sample node: everything on NUMA 0, two PFs."""
    avail = [d.id for d in kubelet.devices(VF_POOL) if d.health == "Healthy"]
    (got,) = kubelet.preferred(VF_POOL, [(avail, ["0000:3b:01.5"], 3)])
    assert got == ["0000:3b:01.5", "0000:3b:01.2", "0000:3b:01.3"], (
        f"not packed on PF 3b:00.1 at the lowest addresses: {got}")
    (got,) = kubelet.preferred(VF_POOL, [(avail, [], 8)])
    assert set(got) == set(PF0_VFS), f"PF 3b:00.0's 8 VFs fit: {got}"
