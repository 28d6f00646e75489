"""The sysfs scaffold is test harness, not product.

On this machine (no NIC) the plugin's counters mount target does not exist in a container's
sysfs and runc cannot create a mount point inside sysfs, so the pod tests lay an empty,
read-only directory tree over /sys/devices first (pods.scaffold_mount). These tests keep that
honest: without the scaffold the bare mount fails here, and nicplug never emits it.
"""

from pathlib import Path

import grpc

from conftest import VF_A, report
from cri import CriClient
from harness import HEALTHY_VFS, VF_IBDEV, VF_POOL
from pods import create_pod


def test_bare_counters_mount_fails_here_without_the_scaffold(containerd, served):
    _, kubelet, _ = served
    (car,) = kubelet.allocate(VF_POOL, [[VF_A]])
    (m,) = car["mounts"]
    client = CriClient(containerd.socket)
    failed_at = error = None
    try:
        cid, _ = create_pod(client, containerd.base, "bare", car, "echo started", scaffold=False)
        failed_at = "StartContainer"
        client.start(cid)
        failed_at = None
    except grpc.RpcError as e:
        failed_at = failed_at or "RunPodSandbox/CreateContainer"
        error = f"{e.code()}: {e.details()}"
    finally:
        errors = client.cleanup()
        client.close()
    report("pod without the scaffold (the plugin's mount alone, on a host without the NIC)",
           [f"failed at {failed_at}", f"error: {error}"])
    assert errors == []
    assert failed_at == "StartContainer", "the bare mount unexpectedly worked: drop the scaffold?"
    assert "read-only file system" in error.lower()
    assert m["container_path"] in error


def test_allocate_never_emits_the_scaffold_or_any_sysfs_parent(served):
    node, kubelet, _ = served
    cars = [kubelet.allocate(VF_POOL, [[bdf]])[0] for bdf in HEALTHY_VFS]
    cars += kubelet.allocate(VF_POOL, [HEALTHY_VFS[:3], HEALTHY_VFS[3:5]])
    seen = []
    for car in cars:
        ibdevs = {VF_IBDEV[b] for b in car["envs"]["PCIDEVICE_NVIDIA_COM_CX6DX_VF"].split(",")}
        for m in car["mounts"]:
            seen.append(m["container_path"])
            p = Path(m["container_path"])
            # Only port directories of the allocated RDMA devices, read-only, from the same
            # path of the host's sysfs: never /sys, /sys/devices or any other parent.
            assert p.parent.name == "ports" and p.parents[1].name in ibdevs, p
            assert p.parents[2].name == "infiniband", p
            assert str(p).startswith("/sys/devices/pci"), p
            assert m["read_only"] is True
            assert Path(m["host_path"]) == node.sys / p.relative_to("/sys")
        assert "scaffold" not in str(car)
    report("Allocate mounts over every healthy VF (and two multi-VF containers)",
           [f"{len(seen)} mounts, all .../infiniband/<allocated ibdev>/ports/<p>; "
            f"none is /sys, /sys/devices or another parent"])
