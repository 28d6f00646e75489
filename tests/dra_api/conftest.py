"""Fixtures for the DRA API-server tests: the sample node, the API server stand-in, and
`nicplug dra publish` daemons stopped by PID at the end.

Run: `NICPLUG_BIN=$PWD/target/debug/nicplug target/venv/bin/python -m pytest -q tests/dra_api`.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apiserver import ApiServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def nicplug_bin():
    path = Path(os.environ.get("NICPLUG_BIN") or REPO / "target" / "debug" / "nicplug")
    if not path.exists():
        pytest.fail(f"{path} missing: run `cargo build` first (or set NICPLUG_BIN)",
                    pytrace=False)
    return path


class Node:
    def __init__(self, generated=None):
        self.base = Path(tempfile.mkdtemp(prefix="npdra"))
        self.root = self.base / "node"
        extra = ["--generated", generated] if generated else []
        subprocess.run([nicplug_bin(), "sample", "write", self.root, *extra], check=True,
                       capture_output=True, timeout=300)
        self.config = self.root / "config.json"
        self.sys = self.root / "sys"

    def pci_dir(self, bdf):
        return (self.sys / "bus" / "pci" / "devices" / bdf).resolve()

    def remove_function(self, bdf):
        """Hot-unplug a VF: the PF's virtfnN link, then `bus/pci/devices/<bdf>`."""
        dev = self.pci_dir(bdf)
        index = None
        pf = (dev / "physfn").resolve()
        for link in pf.glob("virtfn*"):
            if link.resolve() == dev:
                index = int(link.name[len("virtfn"):])
                os.unlink(link)
        os.unlink(self.sys / "bus" / "pci" / "devices" / bdf)
        return dev, index

    def restore_function(self, bdf, dev, index):
        pf = (dev / "physfn").resolve()
        os.symlink(f"../{bdf}", pf / f"virtfn{index}")
        os.symlink(os.path.relpath(dev, self.sys / "bus" / "pci" / "devices"),
                   self.sys / "bus" / "pci" / "devices" / bdf)

    def destroy(self):
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def node():
    n = Node()
    yield n
    n.destroy()


@pytest.fixture
def api(node):
    s = ApiServer()
    s.kubeconfig_path = s.kubeconfig(node.base / "kubeconfig")
    yield s
    s.stop()


class Nicplug:
    """Runs `nicplug dra ...` against the stand-in."""

    def __init__(self, node, api):
        self.node, self.api = node, api
        self.procs = []

    def env(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "KUBECONFIG": str(self.api.kubeconfig_path), "NICPLUG_LOG": "info"}

    @property
    def device_plugins(self):
        return self.node.base / "device-plugins"

    def argv(self, *args):
        # The device plugin's record this node's driver follows: the test's, never the host's.
        own = (["--device-plugins-dir", str(self.device_plugins)]
               if args and args[0] in ("publish", "kubelet") else [])
        return [str(nicplug_bin()), "--host-root", str(self.node.root), "--config",
                str(self.node.config), "dra", *map(str, args), *own]

    def run(self, *args, check=True):
        r = subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"nicplug dra {args} failed ({r.returncode}):\n{r.stderr}")
        return r

    def start(self, *args, command="publish"):
        log = open(self.node.base / f"{command}-{len(self.procs)}.log", "w")
        p = subprocess.Popen(self.argv(command, *args), env=self.env(), stdout=log,
                             stderr=subprocess.STDOUT)
        p.log_path = log.name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode


@pytest.fixture
def nicplug(node, api):
    n = Nicplug(node, api)
    yield n
    for p in n.procs:
        n.stop(p, signal.SIGKILL)
