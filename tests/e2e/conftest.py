"""Fixtures for the container end-to-end suite (issue 4).

One session: a real containerd 1.6 (CRI plugin, runc) on a temp socket with images imported from
busybox-static, the real `nicplug serve` on the bundled sample node, and the grpcio kubelet
stand-in of tests/serve registering it. Every daemon is stopped by PID at the end, every sandbox
and container removed. Needs root; otherwise every test is skipped with the reason (with
CI=true: failed).

Run: `target/venv/bin/python -m pytest -q -s tests/e2e` (scripts/test.sh does).
"""

import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "serve"))  # harness.py, kubelet.py: shared, not copied

from cri import CriClient  # noqa: E402
from harness import VF_POOL, Daemon, Node, nicplug_bin, require  # noqa: E402
from kubelet import Kubelet  # noqa: E402
from pods import host_numbers, probe_script, run_pods  # noqa: E402
from rig import BUSYBOX_IMAGE, PAUSE_IMAGE, Containerd, busybox_layer, rig_support  # noqa: E402

VF_A, VF_B = "0000:3b:00.2", "0000:3b:00.5"  # mlx5_2 and mlx5_5 on the sample node
# A uverbs minor nobody is given (uverbs1, a PF's), made inside the container with mknod.
UNALLOCATED = ("/tmp/x", 231, 193)

# The pause image: the busybox rootfs with a sleep loop that exits on SIGTERM.
PAUSE_CMD = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def report(title, lines):
    """Print what a check found (`-s` shows it; the README quotes one run)."""
    print(f"\n--- {title}")
    for line in lines:
        print(f"    {line}")


@pytest.fixture(scope="session")
def containerd():
    why = rig_support()
    if why:
        require(f"container end-to-end suite: {why}")
    t0 = time.monotonic()
    ctd = Containerd().start()
    leftovers = None
    try:
        layer = busybox_layer()
        ctd.import_image(PAUSE_IMAGE, PAUSE_CMD, layer)
        ctd.import_image(BUSYBOX_IMAGE, ["sh"], layer)
        report("containerd", [f"socket {ctd.socket}", f"pid {ctd.proc.pid}",
                              f"up with both images imported in {time.monotonic() - t0:.2f}s"])
        yield ctd
    finally:
        leftovers = ctd.stop()
    assert not leftovers, f"left behind after removing every sandbox: {leftovers}"


@pytest.fixture(scope="session")
def served():
    """(node, kubelet stand-in, daemon): the sample node served, the VF pool registered."""
    if rig_support():
        require(f"container end-to-end suite: {rig_support()}")
    nicplug_bin()
    node = Node.create()
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    daemon = Daemon(node, rescan_interval=60).start()
    try:
        kubelet.wait_registered(VF_POOL, timeout=20)
        yield node, kubelet, daemon
    except BaseException:
        print(daemon.all_logs())
        raise
    finally:
        daemon.stop(timeout=5)
        kubelet.stop()
        node.destroy()


@pytest.fixture(scope="session")
def pods(containerd, served):
    """Pods A (VF_A) and B (VF_B), alive at the same time, each probing its own nodes, the
    other's (made with mknod) and an unallocated minor. Yields (node, {bdf: PodRun})."""
    node, kubelet, _ = served
    cars = {}
    for bdf in (VF_A, VF_B):
        t = time.monotonic()
        (cars[bdf],) = kubelet.allocate(VF_POOL, [[bdf]])
        report(f"Allocate {VF_POOL} [{bdf}] through the kubelet stand-in "
               f"({(time.monotonic() - t) * 1000:.0f} ms)",
               [f"device {d['container_path']} <- {d['host_path']} ({d['permissions']})"
                for d in cars[bdf]["devices"]]
               + [f"mount {m['container_path']} <- {m['host_path']} "
                  f"(read_only={m['read_only']})" for m in cars[bdf]["mounts"]]
               + [f"env {k}={v}" for k, v in sorted(cars[bdf]["envs"].items())])

    def foreign(of):
        """Another pod's nodes, by their host numbers, plus the unallocated minor."""
        out = [UNALLOCATED]
        for d in cars[of]["devices"]:
            if d["container_path"] not in {x["container_path"] for x in cars[
                    VF_A if of == VF_B else VF_B]["devices"]}:  # rdma_cm is shared
                out.append((f"/tmp/other-{os.path.basename(d['container_path'])}",
                            *host_numbers(d["host_path"])))
        return out

    taken = {host_numbers(d["host_path"]) for c in cars.values() for d in c["devices"]}
    assert UNALLOCATED[1:] not in taken, "the 'unallocated' minor is allocated: pick another"

    client = CriClient(containerd.socket)
    t = time.monotonic()
    try:
        runs = run_pods(client, containerd.base, [
            ("pod-a", cars[VF_A], probe_script(cars[VF_A], foreign(VF_B))),
            ("pod-b", cars[VF_B], probe_script(cars[VF_B], foreign(VF_A))),
        ])
        elapsed = time.monotonic() - t
        for run in runs:
            report(f"{run.name}: what the container reported (exit {run.exit_code})", run.log)
        report("two pods", [f"RunPodSandbox..container exit, both pods: {elapsed:.2f}s"])
        yield node, dict(zip((VF_A, VF_B), runs))
    finally:
        errors = client.cleanup()
        client.close()
        assert not errors, f"cleanup: {errors}"
