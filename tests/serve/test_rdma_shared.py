"""RDMA shared mode (the RDMA shared device plugin's `configList`) through the real daemon and
the kubelet stand-in: the pool registers with `rdmaHcaMax` IDs, and two containers given two
different IDs both get every selected HCA's nodes and counters."""

import json
from pathlib import Path

import pytest

from harness import wait_for

DATA = Path(__file__).resolve().parent.parent / "data" / "rdma-shared"
SHARED = "rdma/rdma_shared_device_a"
NODES = ["/dev/infiniband/uverbs4", "/dev/infiniband/rdma_cm", "/dev/infiniband/umad4",
         "/dev/infiniband/issm4", "/dev/infiniband/uverbs5", "/dev/infiniband/umad5",
         "/dev/infiniband/issm5"]


@pytest.fixture
def shared_node(make_node):
    n = make_node(spec=(DATA / "shared-node.yaml").read_text())
    # The network-operator's example beside an exclusive pool taking one ConnectX-5 port.
    config = json.loads((DATA / "network-operator-example.json").read_text())
    config["resourceList"] = [{"resourceName": "cx5_pf", "resourcePrefix": "nvidia.com",
                               "selectors": {"pciAddresses": ["0000:03:00.0"], "isRdma": True}}]
    n.write_config(config)
    return n


def _start(shared_node, daemons, *extra):
    from kubelet import Kubelet
    k = Kubelet(shared_node.kubelet_dir)
    k.start()
    d = daemons.start(shared_node, rescan_interval=60, extra=extra)
    return k, d


def test_shared_pool_registers_and_two_containers_share_the_hcas(shared_node, daemons):
    kubelet, _ = _start(shared_node, daemons)
    try:
        kubelet.wait_all_registered([SHARED, "nvidia.com/cx5_pf"], timeout=15)
        devs = kubelet.devices(SHARED)
        assert sorted(d.id for d in devs) == sorted(str(i) for i in range(63))
        assert all(d.health == "Healthy" for d in devs)
        assert all(d.numa is None for d in devs)

        a, b = kubelet.allocate(SHARED, [["0"], ["1"]])
        assert a == b
        assert [d["container_path"] for d in a["devices"]] == NODES
        assert len(a["mounts"]) == 2 and all(m["read_only"] for m in a["mounts"])
        assert a["envs"]["NICPLUG_RDMA_IBDEVS_RDMA_RDMA_SHARED_DEVICE_A"] == "mlx5_4,mlx5_5"
        assert a == shared_node.ref_allocate(SHARED, ["17"])

        # The exclusive pool's function is in no shared answer.
        (x,) = kubelet.allocate("nvidia.com/cx5_pf", [["0000:03:00.0"]])
        assert "/dev/infiniband/uverbs0" in [d["container_path"] for d in x["devices"]]
        assert "/dev/infiniband/uverbs0" not in [d["container_path"] for d in a["devices"]]
    finally:
        kubelet.stop()


def _carrier_down(node, bdf, netdev):
    net = node.netdev_dir(bdf, netdev)
    (net / "carrier").write_text("0\n")
    (net / "operstate").write_text("down\n")


def test_shared_pool_goes_unhealthy_only_when_every_hca_does(shared_node, daemons):
    """ens1f0 without carrier from the start: the IDs stay Healthy through ens1f1; once ens1f1
    loses it too (seen by the 1 s safety-net rescan here), every ID turns Unhealthy."""
    from kubelet import Kubelet
    _carrier_down(shared_node, "0000:81:00.0", "ens1f0")
    kubelet = Kubelet(shared_node.kubelet_dir)
    kubelet.start()
    try:
        daemons.start(shared_node, rescan_interval=1)
        kubelet.wait_registered(SHARED, timeout=15)
        devs = kubelet.devices(SHARED)
        assert len(devs) == 63 and all(d.health == "Healthy" for d in devs)
        mark = kubelet.mark(SHARED)
        _carrier_down(shared_node, "0000:81:00.1", "ens1f1")
        _, devs = kubelet.wait_devices(
            SHARED, lambda devs: all(d.health == "Unhealthy" for d in devs), timeout=15,
            after=mark)
        assert len(devs) == 63
    finally:
        kubelet.stop()


def test_shared_pool_cdi_names_one_device(shared_node, daemons, tmp_path):
    cdi_dir = tmp_path / "cdi"
    kubelet, _ = _start(shared_node, daemons, "--cdi", "--cdi-dir", str(cdi_dir))
    try:
        kubelet.wait_registered(SHARED, timeout=15)
        (a,) = kubelet.allocate(SHARED, [["5", "6"]])
        assert a["cdi_devices"] == [{"name": f"{SHARED}=hcas"}]
        assert a["devices"] == [] and a["mounts"] == []
        specs = {json.loads(p.read_text())["kind"]: json.loads(p.read_text())
                 for p in cdi_dir.glob("*.json")}
        (dev,) = specs[SHARED]["devices"]
        assert [n["path"] for n in dev["containerEdits"]["deviceNodes"]] == NODES
    finally:
        kubelet.stop()


def test_shared_hca_counters_labelled_with_every_pod_sharing_it(shared_node, daemons):
    """Two pods share the HCAs (pod-b holds two IDs): each HCA's counters appear once per
    holder, labelled with the HCA's PCI address and that pod, never summed twice."""
    from kubelet import Kubelet, PodResources
    from test_metrics import free_port, samples, value

    pods = [("ns1", "pod-a", "c1", SHARED, ["0"]), ("ns1", "pod-b", "c1", SHARED, ["1", "2"])]
    pr = PodResources(shared_node.kubelet_dir, pods)
    kubelet = Kubelet(shared_node.kubelet_dir)
    kubelet.start()
    port = free_port()
    try:
        daemons.start(shared_node, rescan_interval=60, extra=["--metrics-addr", f"127.0.0.1:{port}"])
        kubelet.wait_registered(SHARED, timeout=15)
        got = samples(port)
        assert value(got, "nicplug_pool_devices", resource=SHARED) == 63
        assert value(got, "nicplug_pool_allocated_devices", resource=SHARED) == 3
        for bdf, ibdev in [("0000:81:00.0", "mlx5_4"), ("0000:81:00.1", "mlx5_5")]:
            hw = shared_node.pci_dir(bdf) / "infiniband" / ibdev / "ports" / "1" / "hw_counters"
            counter = sorted(hw.iterdir())[0]
            want = int(counter.read_text())
            for pod in ["pod-a", "pod-b"]:
                labels = {"resource": SHARED, "device": bdf, "ibdev": ibdev, "port": "1",
                          "namespace": "ns1", "pod": pod, "container": "c1",
                          "counter": counter.name}
                assert value(got, "nicplug_rdma_hw_stat_total", **labels) == want, (bdf, pod)
        # The exclusive pool's HCA is nobody's here.
        assert not [k for k in got if k[0] == "nicplug_rdma_hw_stat_total"
                    and dict(k[1])["device"] == "0000:03:00.0"]
    finally:
        kubelet.stop()
        pr.stop()


def test_config_change_adds_and_a_bad_one_keeps_the_shared_pool(shared_node, daemons):
    """Start with the exclusive pool alone; adding `configList` to the file registers the
    shared pool without a restart; a broken `configList` then changes nothing."""
    from kubelet import Kubelet
    config = json.loads(shared_node.config.read_text())
    shared_list = config.pop("configList")
    shared_node.write_config(config)
    kubelet = Kubelet(shared_node.kubelet_dir)
    kubelet.start()
    try:
        d = daemons.start(shared_node, rescan_interval=60)
        kubelet.wait_registered("nvidia.com/cx5_pf", timeout=15)
        assert SHARED not in kubelet.resources()
        shared_node.write_config({**config, "configList": shared_list})
        kubelet.wait_registered(SHARED, timeout=15)
        assert len(kubelet.devices(SHARED)) == 63

        mark = kubelet.mark(SHARED)
        bad = [{**shared_list[0], "rdmaHcaMax": -1}]
        shared_node.write_config({**config, "configList": bad})
        wait_for(lambda: "configList[0].rdmaHcaMax" in d.stderr(), 15,
                 what="the daemon to refuse the broken configList")
        assert kubelet.mark(SHARED) == mark, "a refused config changed the pool"
        (a,) = kubelet.allocate(SHARED, [["62"]])
        assert [d["container_path"] for d in a["devices"]] == NODES
    finally:
        kubelet.stop()


def test_missing_issm_loses_nothing_and_is_said_once(shared_node, daemons):
    """issm4 gone (sysfs entry, class link and node, as without that MAD node): the shared pool
    still has both HCAs and every other node; one warning names it, however many rebuilds."""
    import os
    import shutil
    from kubelet import Kubelet
    mad = shared_node.pci_dir("0000:81:00.0") / "infiniband_mad"
    shutil.rmtree(mad / "issm4")
    for p in [shared_node.sys / "class" / "infiniband_mad" / "issm4",
              shared_node.root / "dev" / "infiniband" / "issm4"]:
        if os.path.lexists(p):
            os.unlink(p)
    kubelet = Kubelet(shared_node.kubelet_dir)
    kubelet.start()
    try:
        d = daemons.start(shared_node, rescan_interval=1)
        kubelet.wait_registered(SHARED, timeout=15)
        assert len(kubelet.devices(SHARED)) == 63
        (a,) = kubelet.allocate(SHARED, [["0"]])
        assert [x["container_path"] for x in a["devices"]] == \
            [n for n in NODES if not n.endswith("/issm4")]
        assert a["envs"]["NICPLUG_RDMA_PCI_RDMA_RDMA_SHARED_DEVICE_A"] == \
            "0000:81:00.0,0000:81:00.1"
        # Rebuilt views (a config change adds a pool) say it no more.
        config = json.loads(shared_node.config.read_text())
        config["configList"].append({"resourceName": "ib_shared", "rdmaHcaMax": 2,
                                     "selectors": {"linkTypes": ["infiniband"]}})
        shared_node.write_config(config)
        kubelet.wait_registered("rdma/ib_shared", timeout=15)
        warnings = [line for line in d.stderr().splitlines()
                    if "RDMA node missing" in line and "issm" in line]
        assert len(warnings) == 1, warnings
        assert "mlx5_4" in warnings[0]
    finally:
        kubelet.stop()
