"""Nothing freezes the daemon (issue 12 §4). Progress, never wall-clock times, is asserted: a
probe (GetDevicePluginOptions on another pool's socket, as kubelet's dial-back calls it) must
complete while each load is in flight; the figures printed are for reading (the hand-run
`stall_bench.py` measures them on a 1,016-VF node).
"""

import json
import os
import socket
import threading
import time

import grpc
import pytest

from harness import PF_POOL, SAMPLE_POOLS, SAMPLE_VFS, VF_POOL, pb2, wait_for
from kubelet import plugin_channel
from harness import pb2_grpc


class Prober:
    """Calls GetDevicePluginOptions on `path` in a loop from a thread; records each latency."""

    def __init__(self, path):
        self.channel = plugin_channel(path)
        self.stub = pb2_grpc.DevicePluginStub(self.channel)
        self.stub.GetDevicePluginOptions(pb2.Empty(), timeout=10)  # connected
        self.times = []  # (end time, latency)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.stub.GetDevicePluginOptions(pb2.Empty(), timeout=60)
            except grpc.RpcError:
                continue
            self.times.append((time.monotonic(), time.monotonic() - t))
            time.sleep(0.005)

    def answered_between(self, t0, t1):
        return [lat for end, lat in self.times if t0 <= end <= t1]

    def close(self):
        self.stop.set()
        self.thread.join(70)
        self.channel.close()

    def worst(self):
        return max((lat for _, lat in self.times), default=0.0)


def alias_bomb(levels=9, width=9):
    """A YAML 'billion laughs': a few hundred bytes that expand exponentially."""
    lines = ['a0: &a0 ["x"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"resourceList: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_oversized_and_duplicate_requests_are_refused_up_front(node, kubelet, serving):
    too_many = [f"0000:{i // 256:02x}:{(i % 256) // 8:02x}.{i % 8}" for i in range(8000)]
    for call in (
        lambda: kubelet.preferred(VF_POOL, [(too_many, [], 4)]),
        lambda: kubelet.preferred(VF_POOL, [(SAMPLE_VFS + SAMPLE_VFS[:1], [], 2)]),
        lambda: kubelet.allocate(VF_POOL, [too_many]),
        lambda: kubelet.allocate(VF_POOL, [[SAMPLE_VFS[0]], [SAMPLE_VFS[0]]]),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert kubelet.preferred(VF_POOL, [(SAMPLE_VFS, [], 2)]) == [SAMPLE_VFS[:2]]


def test_a_config_parse_never_holds_up_the_plugin_sockets(node, kubelet, daemons):
    config = node.base / "config.yaml"
    config.write_text(json.dumps(json.loads(node.config.read_text())))  # JSON is YAML
    d = daemons.start(node, config=config, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    probe = Prober(node.plugin_dir / kubelet.conn(PF_POOL).endpoint)
    try:
        log_before = len(d.stderr())
        t0 = time.monotonic()
        node.write_config(alias_bomb(), path=config)
        wait_for(lambda: "config" in d.stderr()[log_before:].lower(), 120,
                 what="the alias bomb to be judged")
        t1 = time.monotonic()
        during = probe.answered_between(t0, t1)
        print(f"\nalias bomb judged in {(t1 - t0) * 1000:.0f} ms; probe calls meanwhile: "
              f"{len(during)}, slowest {max(during, default=0) * 1000:.1f} ms")
        if t1 - t0 > 0.2:
            assert len(during) >= 10, "plugin calls were held up while the config was parsed"
        assert d.alive()
    finally:
        probe.close()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_metrics_connection_flood_leaves_the_plugin_sockets_served(node, kubelet, daemons):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = daemons.start(node, rescan_interval=60, extra=["--metrics-addr", f"127.0.0.1:{port}"])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    before = fd_count(d.pid)
    conns = []
    try:
        # Idle clients that never send a request, and half-sent requests.
        for i in range(1500):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            conns.append(c)
        time.sleep(0.5)
        during = fd_count(d.pid)
        print(f"\ndaemon descriptors: {before} before, {during} with {len(conns)} "
              f"metrics clients connected")
        assert during - before <= 64 + 16, "every idle metrics client holds a descriptor"
        # Plugin sockets still accept new connections and answer.
        for r in SAMPLE_POOLS:
            ch = plugin_channel(node.plugin_dir / kubelet.conn(r).endpoint)
            try:
                pb2_grpc.DevicePluginStub(ch).GetDevicePluginOptions(pb2.Empty(), timeout=10)
            finally:
                ch.close()
        kubelet.allocate(VF_POOL, [[SAMPLE_VFS[0]]])
    finally:
        for c in conns:
            c.close()
    # Once the flood is gone, metrics answer again.
    import urllib.request

    def scraped():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False
    wait_for(scraped, 30, interval=0.2, what="a scrape to succeed after the flood")
    assert d.alive()
