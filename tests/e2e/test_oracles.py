"""Real libibverbs and real DPDK as oracles, in the pod's view.

They run here, not inside the busybox container, in a private mount namespace whose /dev is a
fresh tmpfs holding runc's default nodes plus exactly the /dev/infiniband nodes the container
reported (paths and numbers as seen inside it), with the plugin's mounts reproduced read-only
and SYSFS_PATH / SYSFS_PCI_DEVICES pointing at the fixture sysfs (the container's /sys).
"""

import shutil
import subprocess
import time

import pytest

from conftest import VF_A, VF_B, report
from harness import VF_IBDEV
from pods import pod_view_argv, pod_view_env


def need(prog, pkgs):
    if shutil.which(prog) is None:
        pytest.fail(f"`{prog}` is missing: apt-get install {pkgs} (scripts/test.sh does)")


def in_pod_view(node, nodes, mounts, argv, timeout=120):
    t = time.monotonic()
    res = subprocess.run(pod_view_argv(nodes, mounts, node.sys, argv),
                         env=pod_view_env(node.sys), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=timeout)
    return res, time.monotonic() - t


def ibv_devices(node, nodes, mounts):
    res, took = in_pod_view(node, nodes, mounts, ["ibv_devices"])
    assert res.returncode == 0 or not res.stdout.strip(), res.stdout + res.stderr
    rows = res.stdout.splitlines()
    i = next((k for k, line in enumerate(rows) if line.strip().startswith("---")), len(rows))
    return [line.split()[0] for line in rows[i + 1:] if line.split()], res, took


@pytest.mark.parametrize("bdf", [VF_A, VF_B])
def test_ibv_devices_lists_exactly_the_allocated_ibdev(pods, bdf):
    need("ibv_devices", "ibverbs-utils ibverbs-providers")
    node, runs = pods
    run = runs[bdf]
    got, res, took = ibv_devices(node, run.nodes(), run.car["mounts"])
    none, res0, _ = ibv_devices(node, {}, [])
    report(f"ibv_devices in {run.name}'s view ({took:.2f}s)",
           [f"with its nodes {sorted(run.nodes())}:", *res.stdout.splitlines(),
            "with no node (an unprivileged pod without nicplug):",
            *(res0.stdout + res0.stderr).splitlines()])
    assert got == [VF_IBDEV[bdf]]
    assert none == []


def run_testpmd(node, nodes, mounts, eal_args):
    argv = ["dpdk-testpmd", "-l", "0-1", "--no-huge", "-m", "256", "--no-shconf", *eal_args,
            "--log-level=pmd.common.mlx5:debug", "--", "--total-num-mbufs=2048"]
    res, took = in_pod_view(node, nodes, mounts, argv)
    out = res.stdout + res.stderr
    keep = [line for line in out.splitlines()
            if "mlx5" in line or "Verbs" in line or "EAL: Probe" in line or "IOVA" in line]
    return out, keep, took, res.returncode


def test_dpdk_testpmd_reaches_the_allocated_vf_and_only_with_the_allocation(pods):
    need("dpdk-testpmd", "dpdk-dev")
    node, runs = pods
    run = runs[VF_A]
    ibdev = VF_IBDEV[VF_A]
    # The pod's own EAL arguments, exactly as its environment carries them.
    eal = run.env()["NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF"].split()
    with_nodes = run_testpmd(node, run.nodes(), run.car["mounts"], eal)
    without = run_testpmd(node, {}, [], eal)
    other = runs[VF_B]
    foreign = run_testpmd(node, other.nodes(), other.car["mounts"], eal)
    for title, (_, keep, took, rc) in (
            (f"{run.name}'s view: its nodes and mounts", with_nodes),
            ("no allocation: the field report's failure 2", without),
            (f"{other.name}'s view (mlx5_5's nodes) aiming at {VF_A}", foreign)):
        report(f"dpdk-testpmd {' '.join(eal)}, {title} (exit {rc}, {took:.2f}s)", keep)
    out = with_nodes[0]
    assert f'Dev information matches for device "{ibdev}"' in out, out
    assert f'Failed to open IB device "{ibdev}"' in out, out  # no kernel driver: the wall
    assert "Verbs device not found" not in out
    assert f"Verbs device not found: {VF_A}" in without[0], without[0]
    assert f'Dev information matches for device "{ibdev}"' not in foreign[0]
    assert "Dev information matches" not in foreign[0], foreign[0]
