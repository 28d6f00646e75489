"""Plumbing of the `nicplug dra` tests: stubs of kubelet's DRA APIs, a kubelet stand-in that
talks to the driver as kubelet's plugin watcher and DRA manager do, and the driver process.

Kubelet's clients (grpc-go `grpc.Dial(path)` with the default passthrough resolver) send the
socket path percent-encoded as `:authority`; the stand-in sends the same by default.
"""

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "serve"))

from harness import REPO, STUB_ROOT, Node, nicplug_bin  # noqa: E402,F401

# Each upstream file is api.proto: copy them under distinct names so the modules do not clash.
PROTOS = {
    "dra_registration": REPO / "proto" / "pluginregistration" / "v1" / "api.proto",
    "dra_v1": REPO / "proto" / "dra" / "v1" / "api.proto",
    "dra_v1beta1": REPO / "proto" / "dra" / "v1beta1" / "api.proto",
    "dra_health": REPO / "proto" / "drahealth" / "v1alpha1" / "api.proto",
    "dra_health_v1beta1": REPO / "proto" / "drahealth" / "v1beta1" / "api.proto",
}


def stubs():
    """{name: (pb2, pb2_grpc)} for the four protos, generated once per content into target/."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in PROTOS.values())).hexdigest()[:16]
    out = STUB_ROOT / f"dra-{digest}"
    if not (out / "dra_health_v1beta1_pb2_grpc.py").exists():
        from grpc_tools import protoc

        STUB_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=STUB_ROOT, prefix=".gen-dra-"))
        for name, src in PROTOS.items():
            shutil.copy(src, tmp / f"{name}.proto")
        for name in PROTOS:
            rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"--python_out={tmp}",
                              f"--grpc_python_out={tmp}", str(tmp / f"{name}.proto")])
            if rc != 0:
                raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {name}")
        try:
            tmp.rename(out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return {n: (importlib.import_module(f"{n}_pb2"), importlib.import_module(f"{n}_pb2_grpc"))
            for n in PROTOS}


S = stubs()
reg_pb2, reg_grpc = S["dra_registration"]
v1_pb2, v1_grpc = S["dra_v1"]
v1beta1_pb2, v1beta1_grpc = S["dra_v1beta1"]
health_pb2, health_grpc = S["dra_health"]
health_v1beta1_pb2, health_v1beta1_grpc = S["dra_health_v1beta1"]

NODE_NAME = "node1"
KUBELET = "kubelet"  # the authority form kubelet sends: see kubelet_authority()
# What the stand-in sends unless a test says otherwise.
DEFAULT_AUTHORITY = KUBELET


def kubelet_authority(path):
    """grpc-go's encodeAuthority of the socket path: unreserved, sub-delims, ':', '[', ']' and
    '@' stay, every other byte becomes %XX (upper-case hex)."""
    return quote(str(path), safe="-_.~!$&'()*+,;=:[]@")


def channel(path, authority=KUBELET):
    """A grpcio channel to a Unix socket with `authority` (KUBELET: the percent-encoded path)."""
    if authority == KUBELET:
        authority = kubelet_authority(path)
    opts = [] if authority is None else [("grpc.default_authority", authority)]
    return grpc.insecure_channel("unix:" + str(Path(path).resolve()), options=opts)


def label(bdf):
    """A PCI address's DNS-label device name (`0000:3b:00.2` -> `pci-0000-3b-00-2`)."""
    return "pci-" + bdf.replace(":", "-").replace(".", "-")


class Driver:
    """A `nicplug dra` process on a sample node, with its claims directory; stopped by PID."""

    def __init__(self, node, config=None, extra=()):
        self.node = node
        self.base = node.base
        self.registry = self.base / "kubelet" / "plugins_registry"
        self.plugins = self.base / "kubelet" / "plugins"
        self.device_plugins = self.base / "kubelet" / "device-plugins"
        self.device_plugins.mkdir(parents=True, exist_ok=True)
        self.cdi = self.base / "cdi"
        self.devinfo = self.base / "devinfo"
        self.claims = self.base / "claims"
        self.claims.mkdir(exist_ok=True)
        self.config = config or node.config
        self.extra = list(extra)
        self.proc = None
        self.log = self.base / "dra.log"

    @property
    def reg_socket(self):
        return self.registry / "nicplug.io-reg.sock"

    @property
    def dra_socket(self):
        return self.plugins / "nicplug.io" / "dra.sock"

    @property
    def checkpoint(self):
        return self.plugins / "nicplug.io" / "checkpoint.json"

    def argv(self):
        return [str(nicplug_bin()), "--host-root", str(self.node.root), "--config",
                str(self.config), "--log", "info", "dra", "kubelet", "--plugins-registry",
                str(self.registry), "--plugins-dir", str(self.plugins), "--cdi-dir",
                str(self.cdi), "--device-info-dir", str(self.devinfo), "--node-name",
                NODE_NAME, "--claims-from-dir", str(self.claims), "--rescan-interval", "1",
                "--device-plugins-dir", str(self.device_plugins),
                *self.extra]

    def start(self, wait=True):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        if wait:
            deadline = time.monotonic() + 30
            while not (self.reg_socket.exists() and self.dra_socket.exists()):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nicplug dra exited {self.proc.returncode}:\n"
                                       + self.log.read_text())
                if time.monotonic() > deadline:
                    raise RuntimeError("nicplug dra did not serve within 30 s:\n"
                                       + self.log.read_text())
                time.sleep(0.02)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def write_claim(self, uid, devices, config=(), namespace="default", name=None):
        """devices: [(request, bdf)]; config: [(source, requests, parameters)]."""
        alloc = {
            "claim": {"namespace": namespace, "name": name or f"claim-{uid[:8]}", "uid": uid},
            "devices": [{"request": r, "pool": NODE_NAME, "device": label(b)}
                        for r, b in devices],
            "config": [{"source": s, "requests": list(rq), "parameters": p}
                       for s, rq, p in config],
        }
        (self.claims / f"{uid}.json").write_text(json.dumps(alloc))
        return alloc["claim"]

    def spec_path(self, uid):
        return self.cdi / f"nicplug.io-claim_{uid}.json"


class Kubelet:
    """Kubelet's side: the plugin watcher's GetInfo/NotifyRegistrationStatus on the
    registration socket, then NodePrepareResources/NodeUnprepareResources on the endpoint it
    names, with the service version kubelet picks (the first it knows of those offered)."""

    KNOWN = ["v1.DRAPlugin", "v1beta1.DRAPlugin"]

    def __init__(self, driver, authority=None):
        authority = authority or DEFAULT_AUTHORITY
        self.driver = driver
        self.authority = authority
        self.info = None
        self.service = None
        self._ch = None

    def register(self):
        with channel(self.driver.reg_socket, self.authority) as ch:
            stub = reg_grpc.RegistrationStub(ch)
            self.info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=10)
            chosen = [v for v in self.KNOWN if v in self.info.supported_versions]
            ok = self.info.type == "DRAPlugin" and bool(chosen)
            stub.NotifyRegistrationStatus(
                reg_pb2.RegistrationStatus(plugin_registered=ok,
                                           error="" if ok else "no supported version"),
                timeout=10)
        assert ok, self.info
        self.service = chosen[0]
        return self.info

    def _stub(self, service=None):
        service = service or self.service or "v1.DRAPlugin"
        if self._ch is None:
            self._ch = channel(self.info.endpoint if self.info else self.driver.dra_socket,
                               self.authority)
        if service == "v1.DRAPlugin":
            return v1_grpc.DRAPluginStub(self._ch), v1_pb2
        return v1beta1_grpc.DRAPluginStub(self._ch), v1beta1_pb2

    def prepare(self, *claims, service=None):
        stub, pb = self._stub(service)
        req = pb.NodePrepareResourcesRequest(
            claims=[pb.Claim(namespace=c["namespace"], uid=c["uid"], name=c["name"])
                    for c in claims])
        return stub.NodePrepareResources(req, timeout=30).claims

    def unprepare(self, *claims, service=None):
        stub, pb = self._stub(service)
        req = pb.NodeUnprepareResourcesRequest(
            claims=[pb.Claim(namespace=c["namespace"], uid=c["uid"], name=c["name"])
                    for c in claims])
        return stub.NodeUnprepareResources(req, timeout=30).claims

    def health(self, version="v1alpha1"):
        """The NodeWatchResources stream (an iterator of responses) of dra-health `version`."""
        pb, grpc_ = ((health_pb2, health_grpc) if version == "v1alpha1"
                     else (health_v1beta1_pb2, health_v1beta1_grpc))
        ch = channel(self.driver.dra_socket, self.authority)
        return ch, grpc_.DRAResourceHealthStub(ch).NodeWatchResources(
            pb.NodeWatchResourcesRequest(), timeout=60)

    def close(self):
        if self._ch is not None:
            self._ch.close()
            self._ch = None


def spec_edits(spec, cdi_ids):
    """What a container gets from a claim spec for these CDI device IDs, as nicplug's
    `allocate` renders it: {envs, devices, mounts} (spec-level edits apply with any device)."""
    env, devices, mounts = {}, [], []

    def take(edits):
        for e in edits.get("env", []):
            k, _, v = e.partition("=")
            assert k not in env, f"{k} set twice"
            env[k] = v
        for d in edits.get("deviceNodes", []):
            devices.append({"container_path": d["path"], "host_path": d["hostPath"],
                            "permissions": d["permissions"]})
        for m in edits.get("mounts", []):
            mounts.append({"container_path": m["containerPath"], "host_path": m["hostPath"],
                           "read_only": "ro" in m["options"]})

    take(spec.get("containerEdits", {}))
    names = {i.split("=", 1)[1] for i in cdi_ids}
    for d in spec["devices"]:
        if d["name"] in names:
            take(d["containerEdits"])
    return {"envs": env, "devices": devices, "mounts": mounts}


def plain(allocate):
    """An `allocate --json` answer reduced to what a container gets (order-free)."""
    return {"envs": allocate["envs"],
            "devices": sorted(allocate["devices"], key=lambda d: d["container_path"]),
            "mounts": sorted(allocate["mounts"], key=lambda m: m["container_path"])}


def ordered(edits):
    return {"envs": edits["envs"],
            "devices": sorted(edits["devices"], key=lambda d: d["container_path"]),
            "mounts": sorted(edits["mounts"], key=lambda m: m["container_path"])}
