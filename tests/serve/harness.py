"""Plumbing shared by the `nicplug serve` end-to-end tests and the hand-run benchmark.

Everything here is real: the `nicplug` binary, simulated hosts it writes itself, Unix sockets,
signals, network namespaces. Generated gRPC stubs live in `target/py-stubs/` (never committed).
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto" / "deviceplugin" / "v1beta1" / "api.proto"
STUB_ROOT = REPO / "target" / "py-stubs"


# --------------------------------------------------------------------------- prerequisites


def in_ci():
    """CI=true (what CI systems set, and .ci/run runs under): a missing prerequisite fails."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def require(why):
    """`why`: None when a test's prerequisites (root, a third-party program) are met, else what
    is missing. Outside CI the test is skipped with that reason (shown by `-ra`); with CI=true
    it fails, so a run that did not test something never reports ok."""
    import pytest  # not at the top: the hand-run benchmark imports this module without pytest

    if why is None:
        return
    if in_ci():
        pytest.fail(f"prerequisite missing with CI=true: {why}", pytrace=False)
    pytest.skip(why)


# --------------------------------------------------------------------------- gRPC stubs


def compile_stubs(proto, tag):
    """Generate (once per proto content) and import the stubs of `proto`:
    (<name>_pb2, <name>_pb2_grpc). `tag` keeps different protos apart in target/py-stubs/."""
    import importlib

    proto = Path(proto)
    name = proto.stem
    digest = hashlib.sha256(proto.read_bytes()).hexdigest()[:16]
    out = STUB_ROOT / f"{tag}-{digest}"
    if not (out / f"{name}_pb2_grpc.py").exists():
        from grpc_tools import protoc  # imported late: only needed when generating

        STUB_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=STUB_ROOT, prefix=f".gen-{tag}-"))
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto.parent}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(proto),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {proto}")
        try:
            tmp.rename(out)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


def load_stubs():
    """The device plugin API v1beta1 stubs: (api_pb2, api_pb2_grpc)."""
    return compile_stubs(PROTO, "dp")


pb2, pb2_grpc = load_stubs()


# --------------------------------------------------------------------------- the binary


def clean_env():
    """The environment without NICPLUG_* variables: every setting is on the command line."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NICPLUG_")}


def nicplug_bin():
    """`$NICPLUG_BIN`, or `target/debug/nicplug` (built with `cargo build` when missing)."""
    env = os.environ.get("NICPLUG_BIN")
    if env:
        path = Path(env)
        if not path.is_absolute():
            path = REPO / path
        if not path.exists():
            raise RuntimeError(f"NICPLUG_BIN={env} does not exist")
        return path
    path = REPO / "target" / "debug" / "nicplug"
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True, timeout=1800)
    return path


def run_nicplug(*args, timeout=120, check=True):
    """Run the CLI; returns CompletedProcess with text stdout/stderr."""
    res = subprocess.run(
        [str(nicplug_bin()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"nicplug {' '.join(map(str, args))} exited {res.returncode}:\n{res.stderr}"
        )
    return res


# --------------------------------------------------------------------------- simulated nodes


class Node:
    """A simulated host (`nicplug sample write`) plus a kubelet directory beside it.

    Paths stay short on purpose: a Unix socket path must fit in 108 bytes.
    """

    def __init__(self, base, spec=None, generated=None):
        self.base = Path(base)
        self.root = self.base / "node"
        args = ["sample", "write", self.root]
        if spec is not None:
            spec_file = self.base / "spec.yaml"
            spec_file.write_text(spec)
            args += ["--spec", spec_file]
        if generated is not None:
            args += ["--generated", generated]
        run_nicplug(*args, timeout=600)
        self.config = self.root / "config.json"
        self.kubelet_dir = self.base / "kubelet"
        self.plugin_dir = self.kubelet_dir / "device-plugins"
        self.plugin_dir.mkdir(parents=True)
        self.device_info_dir = self.base / "devinfo"
        self.device_info_dir.mkdir()
        self.sys = self.root / "sys"

    @classmethod
    def create(cls, parent=None, **kw):
        base = tempfile.mkdtemp(prefix="np", dir=parent)
        return cls(base, **kw)

    def destroy(self):
        shutil.rmtree(self.base, ignore_errors=True)

    def write_config(self, config, path=None):
        """Atomically replace the config (write a sibling, rename over it)."""
        path = Path(path or self.config)
        text = config if isinstance(config, str) else json.dumps(config, indent=2)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.rename(tmp, path)

    def rule_config(self, rule, resource="cx6dx_vf"):
        """A copy of the config with `nicplug.health` = `rule` on one resource; its path."""
        config = json.loads(self.config.read_text())
        for r in config["resourceList"]:
            if r["resourceName"] == resource:
                r.setdefault("nicplug", {})["health"] = rule
        path = self.root / f"config-{rule}.json"
        self.write_config(config, path)
        return path

    def cli(self, *args, config=None, check=True):
        return run_nicplug(
            "--host-root", self.root, "--config", config or self.config, *args, check=check
        )

    def discover(self, config=None):
        return json.loads(self.cli("discover", "--output", "json", config=config).stdout)

    def ref_allocate(self, resource, ids, config=None):
        """What `nicplug allocate` says a container gets (the reference for the daemon)."""
        return json.loads(self.cli("allocate", "--resource", resource, *ids, config=config).stdout)

    # ---- changes to the fixture tree, as the kernel would make them

    def pci_dir(self, bdf):
        return (self.sys / "bus" / "pci" / "devices" / bdf).resolve()

    def remove_function(self, bdf):
        """Hot-unplug a VF: drop `bus/pci/devices/<bdf>` and the PF's `virtfnN` link to it."""
        dev = self.pci_dir(bdf)
        physfn = (dev / "physfn").resolve() if (dev / "physfn").exists() else None
        if physfn is not None:  # the unwatched link first, the watched one last
            for link in physfn.glob("virtfn*"):
                if link.resolve() == dev:
                    os.unlink(link)
        os.unlink(self.sys / "bus" / "pci" / "devices" / bdf)
        return dev

    def restore_function(self, bdf, dev, virtfn_index=None):
        if virtfn_index is not None and (dev / "physfn").exists():
            pf = (dev / "physfn").resolve()
            os.symlink(f"../{bdf}", pf / f"virtfn{virtfn_index}")
        os.symlink(os.path.relpath(dev, self.sys / "bus" / "pci" / "devices"),
                   self.sys / "bus" / "pci" / "devices" / bdf)

    def unbind(self, bdf):
        """`echo <bdf> > /sys/bus/pci/drivers/<drv>/unbind`: both driver links go. Returns drv."""
        dev = self.pci_dir(bdf)
        drv = (dev / "driver").resolve().name
        os.unlink(dev / "driver")
        os.unlink(self.sys / "bus" / "pci" / "drivers" / drv / bdf)
        return drv

    def bind(self, bdf, drv):
        dev = self.pci_dir(bdf)
        drv_dir = self.sys / "bus" / "pci" / "drivers" / drv
        os.symlink(os.path.relpath(drv_dir, dev), dev / "driver")
        os.symlink(os.path.relpath(dev, drv_dir), drv_dir / bdf)

    def netdev_dir(self, bdf, name):
        return self.pci_dir(bdf) / "net" / name

    def port_state_file(self, bdf, port=1):
        dev = self.pci_dir(bdf)
        (ib,) = list((dev / "infiniband").iterdir())
        return ib / "ports" / str(port) / "state"


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One `nicplug serve` process. stdout and stderr go to files inside the node's directory."""

    def __init__(self, node, config=None, rescan_interval=None, log="info", netns=None,
                 resource_prefix=None, device_info_dir=True, split_roots=False, extra=(),
                 args=None, env=None):
        self.node = node
        # `args`: the exact argument list (after the program name), as a DaemonSet gives it;
        # `env`: NICPLUG_* settings added to the clean environment.
        self.args = None if args is None else list(args)
        self.env = dict(env or {})
        self.split_roots = split_roots  # --sysfs-root/--dev-root/--proc-root, not --host-root
        self.config = Path(config or node.config)
        self.rescan_interval = rescan_interval
        self.log_level = log
        self.netns = netns
        self.resource_prefix = resource_prefix
        self.device_info_dir = node.device_info_dir if device_info_dir is True else device_info_dir
        self.extra = list(extra)
        self.proc = None
        self.runs = 0
        self.stderr_path = None
        self.stdout_path = None

    def argv(self):
        if self.args is not None:
            return [str(nicplug_bin()), *self.args]
        root = self.node.root
        if self.split_roots:
            roots = ["--sysfs-root", str(root / "sys"), "--dev-root", str(root / "dev"),
                     "--proc-root", str(root / "proc")]
        else:
            roots = ["--host-root", str(root)]
        argv = [str(nicplug_bin()), *roots, "--config", str(self.config), "--log", self.log_level]
        if self.resource_prefix:
            argv += ["--resource-prefix", self.resource_prefix]
        argv += ["serve", "--kubelet-dir", str(self.node.kubelet_dir)]
        if self.device_info_dir:
            argv += ["--device-info-dir", str(self.device_info_dir)]
        if self.rescan_interval is not None:
            argv += ["--rescan-interval", str(self.rescan_interval)]
        argv += self.extra
        if self.netns:
            # `ip netns exec` execs the command: the PID we get is the daemon's own.
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.stderr_path = self.node.base / f"daemon-{self.runs}.stderr"
        self.stdout_path = self.node.base / f"daemon-{self.runs}.stdout"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, env={**clean_env(), **self.env},
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Ask it to exit; SIGKILL if it has not within `timeout`. Returns the exit code and
        whether it exited by itself."""
        if self.proc is None:
            return None, True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return self.proc.returncode, False
        return self.proc.returncode, True

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stderr(self):
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")

    def stdout(self):
        if self.stdout_path is None or not self.stdout_path.exists():
            return ""
        return self.stdout_path.read_text(errors="replace")

    def all_logs(self):
        """Every run's stderr, for failure reports."""
        parts = []
        for i in range(1, self.runs + 1):
            p = self.node.base / f"daemon-{i}.stderr"
            text = p.read_text(errors="replace") if p.exists() else ""
            parts.append(f"----- nicplug serve run {i} stderr ({len(text)} bytes) -----\n{text}")
            o = self.node.base / f"daemon-{i}.stdout"
            if o.exists() and o.stat().st_size:
                parts.append(f"----- run {i} stdout -----\n{o.read_text(errors='replace')}")
        return "\n".join(parts)

    def status(self):
        """`/proc/PID/status` as a dict (VmRSS, VmHWM, ...)."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
        return out


def wait_for(pred, timeout, interval=0.01, what="condition"):
    """Poll `pred` until it returns something truthy; returns it. TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- network namespaces


NETNS_PREFIX = f"nicplugtest-{os.getpid()}-"


def netns_support():
    """None when `ip netns` works here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add, links in a namespace)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    name = NETNS_PREFIX + "probe"
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if res.returncode != 0:
        return f"`ip netns add` failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class Netns:
    """A network namespace holding fake links named like the fixture's netdevs."""

    _count = 0

    def __init__(self):
        Netns._count += 1
        self.name = f"{NETNS_PREFIX}{Netns._count}"
        self.ip("netns", "add", self.name, netns=False)
        self.kinds = {}

    def ip(self, *args, netns=True, check=True):
        argv = ["ip", *args]
        if netns:
            argv = ["ip", "-n", self.name, *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
        return res

    def add_link(self, name):
        """A `dummy` link; where the kernel has no dummy driver, one end of a veth pair (the
        peer, `p<name>` cut to 15 characters, stays up so the carrier follows our end)."""
        if self.ip("link", "add", name, "type", "dummy", check=False).returncode == 0:
            self.kinds[name] = "dummy"
        else:
            peer = ("p" + name)[:15]
            self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
            self.ip("link", "set", peer, "up")
            self.kinds[name] = "veth"
        return self.kinds[name]

    def add_veth(self, name):
        """A veth pair, both ends up: `name` and its peer `p<name>` (cut to 15 characters),
        returned. Bringing the peer down takes `name`'s carrier while `name` stays
        administratively up: what a pulled cable or a dead switch port looks like."""
        peer = ("p" + name)[:15]
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        self.ip("link", "set", peer, "up")
        self.ip("link", "set", name, "up")
        self.kinds[name] = "veth"
        return peer

    def set(self, name, state):
        self.ip("link", "set", name, state)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def leftover_netns():
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in res.stdout.splitlines()
            if line.startswith(NETNS_PREFIX)]


# --------------------------------------------------------------------------- the sample node

VF_POOL = "nvidia.com/cx6dx_vf"
PF_POOL = "nvidia.com/cx6dx_pf"
VFIO_POOL = "nvidia.com/intel_vfio"
SAMPLE_POOLS = [VF_POOL, PF_POOL, VFIO_POOL]

PF0_VFS = ["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5",
           "0000:3b:00.6", "0000:3b:00.7", "0000:3b:01.0", "0000:3b:01.1"]
PF1_VFS = ["0000:3b:01.2", "0000:3b:01.3", "0000:3b:01.4", "0000:3b:01.5",
           "0000:3b:01.6", "0000:3b:01.7", "0000:3b:02.0"]  # 0000:3b:02.1 is broken: skipped
SAMPLE_VFS = PF0_VFS + PF1_VFS
# ens1f0v5: own netdev down, RDMA port DOWN. Healthy under the default ("uplink") health rule,
# as every free VF on a real node is; Unhealthy under "strict".
DOWN_VF = "0000:3b:00.7"
HEALTHY_VFS = list(SAMPLE_VFS)
STRICT_HEALTHY_VFS = [v for v in SAMPLE_VFS if v != DOWN_VF]
PF_VFS = {"ens1f0": PF0_VFS, "ens1f1": PF1_VFS}
VF_NETDEV = {bdf: f"ens1f0v{i}" for i, bdf in enumerate(PF0_VFS)}
VF_NETDEV.update({bdf: f"ens1f1v{i}" for i, bdf in enumerate(PF1_VFS)})
VF_IBDEV = {bdf: f"mlx5_{i + 2}" for i, bdf in enumerate(PF0_VFS)}
VF_IBDEV.update({bdf: f"mlx5_{i + 10}" for i, bdf in enumerate(PF1_VFS)})


def socket_name(resource):
    """`nvidia.com/cx6dx_vf` -> `nicplug-nvidia.com-cx6dx_vf.sock`."""
    prefix, _, name = resource.partition("/")
    return f"nicplug-{prefix}-{name}.sock"


# --------------------------------------------------------------------------- full disks

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages


@contextmanager
def mounted_tmpfs(path, daemons, size="1m"):
    """A small tmpfs mounted at `path` (created) for the block; `daemons` are stopped before it
    is unmounted. Skips without root or where mounting is refused."""
    import pytest  # not at the top: the hand-run benchmark imports this module without pytest

    if os.geteuid() != 0:
        require("mounting a tmpfs needs root")
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                          "nicplug-test", str(path)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        require(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        daemons.stop_all()
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, timeout=30)


def fill(path):
    """Write zeros to a new file `path` until the filesystem is full; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    block = bytes(PAGE)
    size = 0
    try:
        while True:
            try:
                size += os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return size
    finally:
        os.close(fd)
