"""Contract point 3: Allocate answers, refusals and the CNI device-info file."""

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from harness import (
    DOWN_VF,
    HEALTHY_VFS,
    PF_POOL,
    SAMPLE_POOLS,
    VF_IBDEV,
    VF_POOL,
    VFIO_POOL,
    pb2,
    pb2_grpc,
)
from kubelet import car_to_dict, plugin_channel


@pytest.mark.parametrize("resource,ids", [
    (VF_POOL, ["0000:3b:00.2"]),
    (VF_POOL, ["0000:3b:00.2", "0000:3b:01.2"]),
    (VF_POOL, ["0000:3b:02.0", "0000:3b:00.3", "0000:3b:01.1"]),
    (PF_POOL, ["0000:af:00.0"]),
    (VFIO_POOL, ["0000:5e:01.0"]),
])
def test_allocate_equals_cli(node, kubelet, serving, resource, ids):
    (got,) = kubelet.allocate(resource, [ids])
    assert got == node.ref_allocate(resource, ids)


def test_allocate_one_response_per_container(node, kubelet, serving):
    containers = [["0000:3b:00.2"], ["0000:3b:00.4", "0000:3b:01.3"], ["0000:3b:01.6"]]
    got = kubelet.allocate(VF_POOL, containers)
    assert got == [node.ref_allocate(VF_POOL, ids) for ids in containers]


def _expect_error(kubelet, resource, containers, code):
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(resource, containers)
    assert err.value.code() == code, f"{err.value.code()}: {err.value.details()}"
    return err.value.details()


def test_unknown_ids_invalid_argument(kubelet, serving):
    details = _expect_error(kubelet, VF_POOL, [["0000:3b:00.2", "0000:99:00.1"]],
                            grpc.StatusCode.INVALID_ARGUMENT)
    assert "0000:99:00.1" in details
    # A device of another pool is not in this one.
    details = _expect_error(kubelet, VF_POOL, [["0000:af:00.0"]],
                            grpc.StatusCode.INVALID_ARGUMENT)
    assert "0000:af:00.0" in details


@pytest.fixture
def strict(node, kubelet, daemons):
    """The sample node served with the strict health rule on the VF pool: DOWN_VF Unhealthy."""
    d = daemons.start(node, config=node.rule_config("strict"), rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    return d


def test_unhealthy_failed_precondition(kubelet, strict):
    details = _expect_error(kubelet, VF_POOL, [["0000:3b:00.2", DOWN_VF]],
                            grpc.StatusCode.FAILED_PRECONDITION)
    assert DOWN_VF in details
    assert "0000:3b:00.2" not in details, f"names a healthy ID too: {details}"


def test_empty_container_request_invalid_argument(kubelet, serving):
    _expect_error(kubelet, VF_POOL, [[]], grpc.StatusCode.INVALID_ARGUMENT)
    _expect_error(kubelet, VF_POOL, [["0000:3b:00.2"], []], grpc.StatusCode.INVALID_ARGUMENT)


def test_refusals_leave_the_daemon_serving(node, kubelet, strict):
    for bad in ([["0000:99:00.1"]], [[DOWN_VF]], [[]]):
        with pytest.raises(grpc.RpcError):
            kubelet.allocate(VF_POOL, bad)
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:00.5"]])
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:00.5"])
    assert kubelet.conn(VF_POOL).stream_open


def test_100_concurrent_allocates(node, kubelet, serving):
    rng = random.Random(7)
    sets = [tuple(sorted(rng.sample(HEALTHY_VFS, rng.randint(1, 3)))) for _ in range(100)]
    refs = {s: node.ref_allocate(VF_POOL, list(s)) for s in set(sets)}
    conn = kubelet.conn(VF_POOL)
    channels = [plugin_channel(conn.path) for _ in range(4)]
    stubs = [pb2_grpc.DevicePluginStub(c) for c in channels]
    start = threading.Barrier(100)

    def one(i):
        req = pb2.AllocateRequest(container_requests=[
            pb2.ContainerAllocateRequest(devices_ids=list(sets[i]))])
        start.wait(10)
        resp = stubs[i % 4].Allocate(req, timeout=30)
        return [car_to_dict(c) for c in resp.container_responses]

    try:
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(one, range(100)))
    finally:
        for c in channels:
            c.close()
    for i, res in enumerate(results):
        assert res == [refs[sets[i]]], f"call {i} for {sets[i]} disagrees"


def test_device_info_file(node, kubelet, serving):
    vf = "0000:3b:00.4"
    kubelet.allocate(VF_POOL, [[vf]])
    path = node.device_info_dir / f"nvidia.com-cx6dx_vf-{vf}-device.json"
    present = sorted(p.name for p in node.device_info_dir.iterdir())
    assert path.exists(), f"no {path.name}; the device-info dir holds {present}"
    assert json.loads(path.read_text()) == {
        "type": "pci", "version": "1.1.0",
        "pci": {"pci-address": vf, "rdma-device": VF_IBDEV[vf]},
    }

    kubelet.allocate(PF_POOL, [["0000:af:00.0"]])
    pf = json.loads((node.device_info_dir / "nvidia.com-cx6dx_pf-0000:af:00.0-device.json")
                    .read_text())
    assert pf == {"type": "pci", "version": "1.1.0",
                  "pci": {"pci-address": "0000:af:00.0", "rdma-device": "mlx5_18"}}

    kubelet.allocate(VFIO_POOL, [["0000:5e:01.0"]])
    vfio = json.loads((node.device_info_dir / "nvidia.com-intel_vfio-0000:5e:01.0-device.json")
                      .read_text())
    assert vfio["type"] == "pci" and vfio["version"] == "1.1.0"
    assert vfio["pci"]["pci-address"] == "0000:5e:01.0"
    assert not vfio["pci"].get("rdma-device"), f"a vfio VF has no RDMA device: {vfio}"


def test_every_pool_allocates_every_healthy_device(node, kubelet, serving):
    for resource in SAMPLE_POOLS:
        for dev in kubelet.devices(resource):
            if dev.health != "Healthy":
                continue
            (got,) = kubelet.allocate(resource, [[dev.id]])
            assert got == node.ref_allocate(resource, [dev.id]), dev.id
