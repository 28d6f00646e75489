"""Health that never empties a healthy node (issue 11, section 3), end to end.

The sample node with every VF's netdev administratively down and its RoCE port DOWN (as on a
real node where no pod holds a VF yet; the kernel then refuses to read `carrier`, here the
file is gone) advertises every VF Healthy. A PF losing carrier takes exactly its VFs. The
verdict and its reason are the same in ListAndWatch, `discover` (LINK column and JSON) and the
metrics (`nicplug_device_healthy{resource,device,reason}`).
"""

from harness import PF1_VFS, SAMPLE_POOLS, SAMPLE_VFS, VF_NETDEV, VF_POOL, wait_for
from kubelet import health_of
from test_metrics import free_port, samples  # noqa: F401  (helpers, not tests)


def all_vfs_down(node):
    """Every Mellanox VF: netdev admin-down, RoCE port DOWN / Disabled."""
    for vf in SAMPLE_VFS:
        net = node.netdev_dir(vf, VF_NETDEV[vf])
        (net / "operstate").write_text("down\n")
        (net / "carrier").unlink()
        port = node.port_state_file(vf)
        port.write_text("1: DOWN\n")
        (port.parent / "phys_state").write_text("3: Disabled\n")


def reasons(got, resource):
    """{device: (value, reason)} of nicplug_device_healthy for one resource."""
    out = {}
    for (name, labels), v in got.items():
        labels = dict(labels)
        if name == "nicplug_device_healthy" and labels["resource"] == resource:
            out[labels["device"]] = (v, labels["reason"])
    return out


def test_every_vf_down_advertises_every_vf_healthy(node, kubelet, daemons):
    all_vfs_down(node)
    port = free_port()
    daemons.start(node, rescan_interval=60, extra=["--metrics-addr", f"127.0.0.1:{port}"])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert health_of(kubelet.devices(VF_POOL)) == {v: "Healthy" for v in SAMPLE_VFS}

    got = wait_for(lambda: reasons(samples(port), VF_POOL), 10, what="device health metrics")
    assert got == {v: (1, "own link down: ignored") for v in SAMPLE_VFS}
    assert reasons(samples(port), "nvidia.com/cx6dx_pf") == {"0000:af:00.0": (1, "ok")}

    # discover agrees, in its JSON and in its table.
    report = node.discover()
    by_id = {f["address"]: f["health"] for f in report["functions"]}
    for vf in SAMPLE_VFS:
        assert by_id[vf] == {"healthy": True, "reason": "own link down: ignored"}, vf
    table = node.cli("discover").stdout
    for vf in SAMPLE_VFS:
        line = next(line for line in table.splitlines() if line.startswith(vf))
        assert "healthy (own link down: ignored)" in line, line


def test_pf_without_carrier_same_verdict_everywhere(node, kubelet, daemons):
    """ens1f1 without carrier in sysfs (rtnetlink has no ens1f1 in the test's namespace)."""
    net = node.netdev_dir("0000:3b:00.1", "ens1f1")
    (net / "carrier").write_text("0\n")
    (net / "operstate").write_text("down\n")
    port = free_port()
    daemons.start(node, rescan_interval=60, extra=["--metrics-addr", f"127.0.0.1:{port}"])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    want = {v: "Unhealthy" if v in PF1_VFS else "Healthy" for v in SAMPLE_VFS}
    assert health_of(kubelet.devices(VF_POOL)) == want

    got = wait_for(lambda: reasons(samples(port), VF_POOL), 10, what="device health metrics")
    for vf in SAMPLE_VFS:
        if vf in PF1_VFS:
            assert got[vf] == (0, "PF ens1f1 no carrier"), vf
        else:
            assert got[vf][0] == 1, vf
    assert got["0000:3b:00.7"] == (1, "own link down: ignored")
    by_id = {f["address"]: f["health"] for f in node.discover()["functions"]}
    for vf in PF1_VFS:
        assert by_id[vf] == {"healthy": False, "reason": "PF ens1f1 no carrier"}, vf
    table = node.cli("discover").stdout
    line = next(line for line in table.splitlines() if line.startswith(PF1_VFS[0]))
    assert "unhealthy: PF ens1f1 no carrier" in line, line
