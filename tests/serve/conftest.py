"""Fixtures for the `nicplug serve` end-to-end suite: a simulated node, a kubelet stand-in
(grpcio) on its kubelet directory, and daemons that are always stopped by PID at the end.

Run: `target/venv/bin/python -m pytest -q tests/serve` (scripts/test.sh does).
"""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    SAMPLE_POOLS,
    Daemon,
    Netns,
    Node,
    leftover_netns,
    netns_support,
    require,
    nicplug_bin,
)
from kubelet import Kubelet  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture(scope="session", autouse=True)
def binary():
    """The daemon under test must exist and know `serve`; fail loudly otherwise."""
    path = nicplug_bin()
    res = subprocess.run([str(path), "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        pytest.fail(f"{path} has no working `serve` subcommand:\n{res.stderr}", pytrace=False)
    yield path
    left = leftover_netns()
    for name in left:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert not left, f"network namespaces left behind: {left}"


@pytest.fixture
def node():
    """The bundled sample node, in a fresh short temp dir."""
    n = Node.create()
    yield n
    n.destroy()


@pytest.fixture
def make_node():
    """Nodes from a custom spec (YAML text) or `generated=`."""
    made = []

    def make(**kw):
        n = Node.create(**kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.destroy()


class Daemons:
    def __init__(self):
        self.all = []

    def start(self, node, **kw):
        d = Daemon(node, **kw).start()
        self.all.append(d)
        return d

    def stop_all(self):
        for d in self.all:
            d.stop(timeout=5)


@pytest.fixture
def daemons(request):
    """Start daemons with `daemons.start(node, ...)`; every one is stopped (SIGTERM, then
    SIGKILL) at the end, and its stderr printed when the test failed."""
    ds = Daemons()
    yield ds
    ds.stop_all()
    if _failed(request):
        for d in ds.all:
            print(f"\n===== daemon {d.argv()} =====")
            print(d.all_logs())


@pytest.fixture
def kubelet(node, request):
    k = Kubelet(node.kubelet_dir)
    k.start()
    yield k
    k.stop()
    k.stop_pod_resources()
    if _failed(request):
        print("\n===== kubelet stand-in: Register calls =====")
        for r in k.all_registrations:
            print(r)


@pytest.fixture
def serving(node, kubelet, daemons):
    """The sample node served with default options, all three pools registered."""
    d = daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    return d


@pytest.fixture
def netns(daemons):
    """Factory of network namespaces (root and `ip netns` needed, else the test is skipped).
    Daemons are stopped before the namespaces are deleted."""
    why = netns_support()
    if why:
        require(f"rtnetlink test needs a network namespace: {why}")
    made = []

    def make():
        ns = Netns()
        made.append(ns)
        return ns

    yield make
    daemons.stop_all()
    for ns in made:
        ns.delete()
