"""A real containerd (Debian's 1.6, CRI plugin, runc) started by the tests on a temp socket,
and container images built from busybox-static without any registry.

Everything it starts is stopped by PID; everything it writes lives under one temp directory.
"""

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

PAUSE_IMAGE = "localhost/pause:local"
BUSYBOX_IMAGE = "localhost/busybox:local"
BUSYBOX = Path("/bin/busybox")

# --------------------------------------------------------------------------- images


def _blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def busybox_layer():
    """A layer tar: /bin/busybox (static) plus one symlink per applet, and the usual dirs."""
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
                  "etc", "root", "var"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(set(applets)):
            if path == "bin/busybox":
                continue
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = "/bin/busybox"
            tar.addfile(info)
    return buf.getvalue()


def oci_archive(name, cmd, layer):
    """An OCI image-layout tarball (oci-layout, index.json, blobs/sha256/...) for one image."""
    layer_digest, layer = _blob(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_bytes = _blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
    }
    for digest, data in ((layer_digest, layer), (config_digest, config_bytes),
                         (manifest_digest, manifest_bytes)):
        files["blobs/sha256/" + digest.split(":")[1]] = data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blobs")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("blobs/sha256")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- containerd


def rig_support():
    """None when a containerd CRI rig can run here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "needs root (containerd, runc, mount namespaces, mknod)"
    for prog in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
        if shutil.which(prog) is None:
            return f"`{prog}` is not installed (apt-get install containerd runc)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    return None


def _set(text, pattern, value, what):
    new, n = re.subn(pattern, value, text, flags=re.M)
    if n < 1:
        raise RuntimeError(f"containerd default config has no {what} ({pattern!r})")
    return new


class Containerd:
    """One containerd with everything (root, state, sockets, CNI dir, logs) under `base`."""

    def __init__(self, base=None):
        self.base = Path(base or tempfile.mkdtemp(prefix="ctd"))
        self.socket = self.base / "c.sock"
        self.proc = None
        self.log_path = self.base / "containerd.log"

    def write_config(self):
        cfg = subprocess.run(["containerd", "config", "default"], capture_output=True,
                             text=True, check=True).stdout
        cni = self.base / "cni"
        cni.mkdir(exist_ok=True)
        b = self.base
        cfg = _set(cfg, r'^root = ".*"$', f'root = "{b}/root"', "root")
        cfg = _set(cfg, r'^state = ".*"$', f'state = "{b}/state"', "state")
        cfg = _set(cfg, r'^(\s*)address = "/run/containerd/containerd.sock"$',
                   rf'\1address = "{self.socket}"', "[grpc] address")
        cfg = _set(cfg, r'^(\s*)sandbox_image = ".*"$', rf'\1sandbox_image = "{PAUSE_IMAGE}"',
                   "sandbox_image")
        cfg = _set(cfg, r'^(\s*)restrict_oom_score_adj = .*$',
                   r'\1restrict_oom_score_adj = true', "restrict_oom_score_adj")
        cfg = _set(cfg, r'^(\s*)SystemdCgroup = .*$', r'\1SystemdCgroup = false',
                   "SystemdCgroup")
        cfg = _set(cfg, r'^(\s*)conf_dir = ".*"$', rf'\1conf_dir = "{cni}"', "CNI conf_dir")
        cfg = _set(cfg, r'^(\s*)path = "/opt/containerd"$', rf'\1path = "{b}/opt"', "opt path")
        path = self.base / "config.toml"
        path.write_text(cfg)
        return path

    def start(self, timeout=20):
        config = self.write_config()
        with open(self.log_path, "wb") as log:
            # setsid: its own session, so nothing of ours signals it by accident.
            self.proc = subprocess.Popen(["containerd", "--config", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"containerd socket absent after {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctr(self, *args, input=None, timeout=120):
        res = subprocess.run(["ctr", "-n", "k8s.io", "--address", str(self.socket), *args],
                             input=input, capture_output=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace")

    def import_image(self, name, cmd, layer):
        archive = self.base / (name.replace("/", "_").replace(":", "_") + ".tar")
        archive.write_bytes(oci_archive(name, cmd, layer))
        return self.ctr("image", "import", str(archive))

    def shim_pids(self):
        """PIDs of containerd-shim-runc-v2 processes serving this containerd."""
        pids = []
        needle = str(self.socket).encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmd.split(b"\0")[0] and needle in cmd:
                pids.append(int(d.name))
        return pids

    def stop(self):
        """SIGTERM containerd (SIGKILL after 10 s), then any shim of ours still alive, by PID;
        then unmount whatever is left under `base` and remove it. Returns leftovers found."""
        leftovers = []
        shims = self.shim_pids()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pid in shims:
            try:
                os.kill(pid, signal.SIGKILL)
                leftovers.append(f"shim pid {pid}")
            except ProcessLookupError:
                pass
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp.startswith(str(self.base) + "/"):
                mounts.append(mp)
        for mp in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
            leftovers.append(f"mount {mp}")
        shutil.rmtree(self.base, ignore_errors=True)
        return leftovers
