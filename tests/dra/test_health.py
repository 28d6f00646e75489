"""DRA device health (dra-health NodeWatchResources, v1alpha1 and v1beta1; alpha in kubelet
1.34+, behind the ResourceHealthStatus gate): the device plugin's verdicts, per pool (node) and
device."""

import time

import pytest

from dra import health_pb2, label


def healthy_map(resp):
    return {d.device.device_name: d.health for d in resp.devices}


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_health_follows_the_device_plugin_verdicts(node, driver, kubelet, version):
    ch, stream = kubelet.health(version)
    try:
        first = next(stream)
        assert {d.device.pool_name for d in first.devices} == {"node1"}
        report = node.discover()
        want = {}
        for f in report["functions"] if isinstance(report, dict) else report:
            if f.get("placement", {}).get("kind") == "pool":
                want[label(f["address"])] = f
        got = healthy_map(first)
        assert set(got) == set(want), (sorted(got), sorted(want))
        assert set(got.values()) == {health_pb2.HEALTHY}
        # PF ens1f1 loses its carrier: exactly its VFs turn unhealthy, on the same stream.
        net = node.sys / "class" / "net" / "ens1f1"
        (net / "carrier").write_text("0\n")
        (net / "operstate").write_text("down\n")
        deadline = time.monotonic() + 20
        while True:
            msg = next(stream)
            bad = {k for k, v in healthy_map(msg).items() if v == health_pb2.UNHEALTHY}
            if bad:
                break
            assert time.monotonic() < deadline
        vfs_of_pf1 = {label(f"0000:3b:0{x}") for x in
                      ["1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "2.0"]}
        assert bad == vfs_of_pf1, sorted(bad)
        if version == "v1beta1":  # the device plugin's wording, as `discover` says it
            msgs = {d.message for d in msg.devices if d.device.device_name in bad}
            assert msgs == {"unhealthy: PF ens1f1 no carrier"}, msgs
    finally:
        ch.close()
