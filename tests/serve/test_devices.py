"""Contract point 7: changes on the (fixture) sysfs tree reach ListAndWatch.

Removal and unbind must be seen through inotify: the daemon runs with a 60 s rescan interval
and each wait is 5 s. Health changes that inotify cannot see (port state, operstate files) are
for the periodic rescan (1 s here).
"""

import time

import grpc
import pytest

from harness import (
    HEALTHY_VFS,
    PF0_VFS,
    PF1_VFS,
    SAMPLE_POOLS,
    SAMPLE_VFS,
    STRICT_HEALTHY_VFS,
    VF_NETDEV,
    VF_POOL,
)
from kubelet import health_of, ids_of


@pytest.fixture
def watched(node, kubelet, daemons):
    d = daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    return d


def _gone(vf):
    return lambda devs: vf not in ids_of(devs)


def test_vf_removed(node, kubelet, watched):
    vf = "0000:3b:00.4"
    mark = kubelet.mark(VF_POOL)
    t0 = time.monotonic()
    node.remove_function(vf)
    t, devs = kubelet.wait_devices(VF_POOL, _gone(vf), timeout=5, after=mark)
    print(f"\nVF link removed -> ListAndWatch update: {(t - t0) * 1000:.1f} ms")
    assert ids_of(devs) == [v for v in SAMPLE_VFS if v != vf]
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(VF_POOL, [[vf]])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert kubelet.conn(VF_POOL) is mark[0], "a device change must not re-register"


def test_vf_unbound(node, kubelet, watched):
    vf = "0000:3b:01.3"
    mark = kubelet.mark(VF_POOL)
    t0 = time.monotonic()
    node.unbind(vf)
    t, devs = kubelet.wait_devices(VF_POOL, _gone(vf), timeout=5, after=mark)
    print(f"\nVF unbound -> ListAndWatch update: {(t - t0) * 1000:.1f} ms")
    assert ids_of(devs) == [v for v in SAMPLE_VFS if v != vf]


def test_vf_rebound_and_readded(node, kubelet, watched):
    vf = "0000:3b:01.4"
    mark = kubelet.mark(VF_POOL)
    drv = node.unbind(vf)
    kubelet.wait_devices(VF_POOL, _gone(vf), timeout=5, after=mark)
    mark = kubelet.mark(VF_POOL)
    node.bind(vf, drv)
    _, devs = kubelet.wait_devices(VF_POOL, lambda d: vf in ids_of(d), timeout=5, after=mark)
    assert ids_of(devs) == SAMPLE_VFS

    vf2 = PF0_VFS[1]
    mark = kubelet.mark(VF_POOL)
    dev = node.remove_function(vf2)
    kubelet.wait_devices(VF_POOL, _gone(vf2), timeout=5, after=mark)
    mark = kubelet.mark(VF_POOL)
    node.restore_function(vf2, dev, virtfn_index=1)
    _, devs = kubelet.wait_devices(VF_POOL, lambda d: vf2 in ids_of(d), timeout=5, after=mark)
    assert ids_of(devs) == SAMPLE_VFS


def test_each_change_one_message(node, kubelet, watched):
    conn = kubelet.conn(VF_POOL)
    n0 = len(conn.messages)
    for vf in ["0000:3b:00.2", "0000:3b:01.6"]:
        mark = kubelet.mark(VF_POOL)
        node.remove_function(vf)
        kubelet.wait_devices(VF_POOL, _gone(vf), timeout=5, after=mark)
    time.sleep(0.5)
    lists = [ids_of(devs) for _, devs in conn.messages[n0:]]
    assert len(lists) == 2, f"expected one message per change, got {lists}"
    assert all(a != b for a, b in zip(lists, lists[1:])), "a repeated list"


def test_health_from_rescan(node, kubelet, daemons):
    """The default rule from sysfs alone (no rtnetlink opinion on ens1f1 here): the PF's
    carrier takes exactly its VFs; a VF's own port or netdev going down changes nothing."""
    daemons.start(node, rescan_interval=1)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    pf_net = node.netdev_dir("0000:3b:00.1", "ens1f1")
    before = health_of(kubelet.devices(VF_POOL))
    assert set(before.values()) == {"Healthy"}
    mark = kubelet.mark(VF_POOL)
    # A VF's own state first: it must not show up in the message the PF's carrier causes.
    node.port_state_file("0000:3b:00.3").write_text("1: DOWN\n")
    (node.netdev_dir("0000:3b:01.5", VF_NETDEV["0000:3b:01.5"]) / "operstate").write_text("down\n")
    (pf_net / "carrier").write_text("0\n")
    (pf_net / "operstate").write_text("down\n")
    want = {v: "Unhealthy" if v in PF1_VFS else "Healthy" for v in SAMPLE_VFS}
    _, devs = kubelet.wait_devices(VF_POOL, lambda d: health_of(d) != before,
                                   timeout=10, after=mark)
    assert health_of(devs) == want, "the first change is the PF's, and only its VFs"
    assert ids_of(devs) == SAMPLE_VFS, "an unhealthy device stays listed"
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(VF_POOL, [["0000:3b:01.5"]])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    mark = kubelet.mark(VF_POOL)
    (pf_net / "carrier").write_text("1\n")
    (pf_net / "operstate").write_text("up\n")
    _, devs = kubelet.wait_devices(
        VF_POOL, lambda d: set(health_of(d).values()) == {"Healthy"}, timeout=10, after=mark)
    assert [i for i, h in health_of(devs).items() if h == "Healthy"] == HEALTHY_VFS


def test_strict_health_from_rescan(node, kubelet, daemons):
    """`"nicplug": {"health": "strict"}`: the VF's own RDMA port and netdev count."""
    daemons.start(node, config=node.rule_config("strict"), rescan_interval=1)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    port = node.port_state_file("0000:3b:00.3")
    mark = kubelet.mark(VF_POOL)
    port.write_text("1: DOWN\n")
    t, devs = kubelet.wait_devices(
        VF_POOL, lambda d: health_of(d)["0000:3b:00.3"] == "Unhealthy", timeout=10, after=mark)
    assert ids_of(devs) == SAMPLE_VFS, "an unhealthy device stays listed"
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(VF_POOL, [["0000:3b:00.3"]])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    mark = kubelet.mark(VF_POOL)
    port.write_text("4: ACTIVE\n")
    kubelet.wait_devices(
        VF_POOL, lambda d: health_of(d)["0000:3b:00.3"] == "Healthy", timeout=10, after=mark)

    vf = "0000:3b:01.5"
    operstate = node.pci_dir(vf) / "net" / VF_NETDEV[vf] / "operstate"
    mark = kubelet.mark(VF_POOL)
    operstate.write_text("down\n")
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[vf] == "Unhealthy", timeout=10,
                         after=mark)
    mark = kubelet.mark(VF_POOL)
    operstate.write_text("up\n")
    _, devs = kubelet.wait_devices(VF_POOL, lambda d: health_of(d)[vf] == "Healthy",
                                   timeout=10, after=mark)
    assert [i for i, h in health_of(devs).items() if h == "Healthy"] == STRICT_HEALTHY_VFS
