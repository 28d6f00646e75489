"""Fixtures of the `nicplug dra` kubelet-side suite: a sample node, the driver on it, and a
kubelet stand-in (grpcio). Run: `target/venv/bin/python -m pytest -q tests/dra`."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dra import Driver, Kubelet, Node, nicplug_bin  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def binary():
    path = nicplug_bin()
    res = subprocess.run([str(path), "dra", "--help"], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        pytest.fail(f"{path} has no working `dra` subcommand:\n{res.stderr}", pytrace=False)
    return path


@pytest.fixture
def node():
    n = Node.create()
    yield n
    n.destroy()


@pytest.fixture
def driver(node, request):
    d = Driver(node).start()
    yield d
    d.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(d.log.read_text())


@pytest.fixture
def kubelet(driver):
    k = Kubelet(driver)
    k.register()
    yield k
    k.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
