"""Two DPDK pods with one VF each, as kubelet would run them: nicplug's Allocate answer (through
the grpcio kubelet stand-in) mapped to CRI, containerd + runc running a busybox probe inside.

What the container itself reports is checked against the fixture host's sysfs: its
/dev/infiniband, what the device cgroup lets it open, the counters mount, its environment, and
which mounts sit under /sys.
"""

import errno
import os

import pytest

from conftest import VF_A, VF_B, report
from harness import VF_IBDEV

EPERM = os.strerror(errno.EPERM)  # device cgroup said no
NO_DRIVER = {os.strerror(errno.ENXIO), os.strerror(errno.ENODEV)}  # cgroup said yes
EROFS = os.strerror(errno.EROFS)


def sysfs_dev(node, path_in_sysfs):
    major, minor = (node.sys / path_in_sysfs / "dev").read_text().strip().split(":")
    return int(major), int(minor)


def test_each_pod_ran_its_probe_to_the_end(pods):
    _, runs = pods
    for run in runs.values():
        assert run.exit_code == 0, run.log
        assert run.log and run.log[-1] == "DONE", run.log


@pytest.mark.parametrize("bdf", [VF_A, VF_B])
def test_dev_infiniband_holds_exactly_the_allocated_nodes_with_sysfs_numbers(pods, bdf):
    node, runs = pods
    run = runs[bdf]
    ibdev = VF_IBDEV[bdf]
    n = ibdev.split("_")[1]
    vf = node.pci_dir(bdf).relative_to(node.sys.resolve())
    expected = {
        f"/dev/infiniband/uverbs{n}": sysfs_dev(node, vf / "infiniband_verbs" / f"uverbs{n}"),
        f"/dev/infiniband/umad{n}": sysfs_dev(node, vf / "infiniband_mad" / f"umad{n}"),
        f"/dev/infiniband/issm{n}": sysfs_dev(node, vf / "infiniband_mad" / f"issm{n}"),
        "/dev/infiniband/rdma_cm": sysfs_dev(node, "class/misc/rdma_cm"),
    }
    got = run.nodes()
    report(f"{run.name} ({bdf}, {ibdev}): /dev/infiniband",
           [f"{p} {ma}:{mi} (sysfs says {expected.get(p)})" for p, (ma, mi) in sorted(got.items())])
    assert got == expected


@pytest.mark.parametrize("bdf", [VF_A, VF_B])
def test_device_cgroup_allows_the_allocated_nodes_and_nothing_else(pods, bdf):
    _, runs = pods
    run = runs[bdf]
    opens = run.opens()
    mknods = run.kv("MKNOD")
    report(f"{run.name}: open() results inside the container",
           [f"{p}: {r}" for p, r in sorted(opens.items())]
           + [f"mknod {p}: {r}" for p, r in sorted(mknods.items())])
    own = [d["container_path"] for d in run.car["devices"]]
    for path in own:  # past the cgroup; no RDMA driver on this host
        assert opens[path] in NO_DRIVER, (path, opens[path])
    made = [p for p in opens if p.startswith("/tmp/")]
    assert "/tmp/x" in made and len(made) == 4, made  # unallocated minor + the other's 3 nodes
    for path in made:
        assert mknods[path] == "ok", (path, mknods[path])
        assert opens[path] == EPERM, (path, opens[path])


@pytest.mark.parametrize("bdf", [VF_A, VF_B])
def test_counters_mount_is_the_port_dir_readable_and_read_only(pods, bdf):
    node, runs = pods
    run = runs[bdf]
    (m,) = run.car["mounts"]
    port = m["container_path"]
    reads = run.kv("READ")
    writes = run.kv("WRITE")
    mounts = {mp: (root, opts, fstype) for root, mp, opts, fstype in run.mounts()}
    report(f"{run.name}: counters mount",
           [f"mountinfo: {port} {mounts.get(port)}"]
           + [f"read {p}: {v}" for p, v in sorted(reads.items())]
           + [f"write {p}: {v}" for p, v in sorted(writes.items())])
    host_port = node.sys / os.path.relpath(port, "/sys")
    assert port.startswith("/sys/devices/") and port.endswith(
        f"/infiniband/{VF_IBDEV[bdf]}/ports/1")
    assert port in mounts
    assert "ro" in mounts[port][1].split(",")
    assert reads[f"{port}/state"] == (host_port / "state").read_text().strip()
    assert reads[f"{port}/hw_counters/out_of_buffer"] == (
        host_port / "hw_counters" / "out_of_buffer").read_text().strip()
    assert writes[f"{port}/hw_counters/out_of_buffer"] == EROFS


@pytest.mark.parametrize("bdf", [VF_A, VF_B])
def test_env_is_set_and_no_host_sys_is_mounted(pods, bdf):
    _, runs = pods
    run = runs[bdf]
    env = run.env()
    report(f"{run.name}: environment", [f"{k}={v}" for k, v in sorted(env.items())])
    assert env["PCIDEVICE_NVIDIA_COM_CX6DX_VF"] == bdf
    assert f'"{bdf}"' in env["PCIDEVICE_NVIDIA_COM_CX6DX_VF_INFO"]
    assert env["NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF"] == f"-a {bdf} --iova-mode=va"
    assert env == run.car["envs"]
    # Under /sys: the runtime's own sysfs, the test-only scaffold, the plugin's port dir. No
    # bind of a host sysfs tree (or a parent of the port dir) anywhere.
    mounts = run.mounts()
    report(f"{run.name}: mounts under /sys (cgroups left out): root mountpoint opts fstype",
           [" ".join(m) for m in mounts])
    points = [mp for _, mp, _, _ in mounts]
    (port,) = [m["container_path"] for m in run.car["mounts"]]
    assert sorted(points) == sorted(["/sys", "/sys/devices", port]), points
    by_point = {mp: (root, fstype) for root, mp, _, fstype in mounts}
    assert by_point["/sys"] == ("/", "sysfs")  # the container's own sysfs, not a bind
    assert by_point["/sys/devices"][1] != "sysfs"  # the scaffold (an empty tree), test only
