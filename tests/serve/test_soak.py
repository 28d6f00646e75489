"""Issue 7, soak: ~40 s of continuous Allocate, device churn (a VF unbound and bound again) and
kubelet restarts against one daemon. Its resident memory and open file descriptors are sampled
after a warm-up and at the end: they must not grow (fds within 3, RSS within 2 MiB). No device
is handed out twice: no ID in two pools at once (polled throughout), and the Allocate answers
of the run give no two devices one node or counters mount, and one device always the same."""

import os
import threading
import time

import grpc

from harness import HEALTHY_VFS, SAMPLE_POOLS, VF_POOL, pb2, pb2_grpc, socket_name
from kubelet import Ledger, advertised_twice, car_to_dict, ids_of, plugin_channel

WARMUP_S = 6
SOAK_S = 32
FD_SLACK = 3
RSS_SLACK_KIB = 2048


def sample(daemon):
    rss_kib = int(daemon.status()["VmRSS"].split()[0])
    fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
    return rss_kib, fds


def test_soak_allocate_churn_restarts(node, kubelet, daemons):
    d = daemons.start(node, rescan_interval=1)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    churn_vf = HEALTHY_VFS[-1]
    alloc_vfs = [v for v in HEALTHY_VFS[:6] if v != churn_vf]
    refs = {vf: node.ref_allocate(VF_POOL, [vf]) for vf in alloc_vfs}
    stop = threading.Event()
    stats = {"allocs": 0, "alloc_errors": 0, "churns": 0, "restarts": 0}
    wrong = []
    ledger = Ledger()  # churn_vf is never allocated: the host changes it
    twice = {}

    def allocator():
        i = 0
        sock = node.plugin_dir / socket_name(VF_POOL)
        while not stop.is_set():
            vf = alloc_vfs[i % len(alloc_vfs)]
            i += 1
            channel = plugin_channel(sock)
            try:
                resp = pb2_grpc.DevicePluginStub(channel).Allocate(pb2.AllocateRequest(
                    container_requests=[pb2.ContainerAllocateRequest(devices_ids=[vf])]),
                    timeout=5)
                got = car_to_dict(resp.container_responses[0])
                stats["allocs"] += 1
                ledger.record(VF_POOL, [vf], got)
                if got != refs[vf]:
                    wrong.append((vf, got))
            except grpc.RpcError:
                stats["alloc_errors"] += 1  # during a kubelet restart the socket is gone
                time.sleep(0.01)
            finally:
                channel.close()

    def churner():
        while not stop.is_set():
            drv = node.unbind(churn_vf)
            time.sleep(0.1)
            node.bind(churn_vf, drv)
            time.sleep(0.1)
            stats["churns"] += 1

    def restarter():
        while not stop.wait(4):
            kubelet.restart()
            stats["restarts"] += 1

    def watch_pools(seconds):
        """Sleep `seconds`, meanwhile polling the pools' latest messages."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            twice.update(advertised_twice(kubelet))
            time.sleep(0.25)

    threads = [threading.Thread(target=f, daemon=True) for f in (allocator, churner, restarter)]
    for t in threads:
        t.start()
    t_start = time.monotonic()
    try:
        watch_pools(WARMUP_S)
        rss0, fds0 = sample(d)
        watch_pools(SOAK_S)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    # Quiesce: the last restart registered, the churned VF back, one second of calm.
    t0 = kubelet.restart()
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15, after=t0)
    kubelet.wait_devices(VF_POOL, lambda devs: churn_vf in ids_of(devs), timeout=10)
    time.sleep(1.0)
    rss1, fds1 = sample(d)
    elapsed = time.monotonic() - t_start
    print(f"\nsoak {elapsed:.0f} s: {stats['allocs']} Allocates ({stats['alloc_errors']} gRPC "
          f"errors), {stats['churns']} unbind/bind cycles, {stats['restarts']} kubelet "
          f"restarts; VmRSS {rss0} -> {rss1} KiB ({rss1 - rss0:+d}), fds {fds0} -> {fds1} "
          f"({fds1 - fds0:+d})")
    assert d.alive(), d.stderr()[-4000:]
    assert not wrong, f"wrong Allocate answers: {wrong[:3]}"
    assert not twice, f"advertised by several pools at once: {twice}"
    ledger.check(kubelet)
    assert stats["allocs"] > 100 and stats["churns"] > 20 and stats["restarts"] >= 5
    assert abs(fds1 - fds0) <= FD_SLACK, f"fds {fds0} -> {fds1}"
    assert rss1 - rss0 < RSS_SLACK_KIB, f"VmRSS grew {rss1 - rss0} KiB ({rss0} -> {rss1})"
