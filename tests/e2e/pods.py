"""Pods as kubelet makes them: Allocate through the kubelet stand-in, the answer mapped to CRI,
RunPodSandbox / CreateContainer / StartContainer on containerd, a busybox `sh -c` probe inside,
its findings read back from the CRI log file. Also the sysfs scaffold (test harness only) and
the "pod view" mount namespace in which real libibverbs and DPDK run on this host."""

import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cri import allocate_to_cri, cri, read_cri_log
from rig import BUSYBOX_IMAGE

# Nodes every runc container gets in /dev (runc's default device list).
RUNC_DEFAULT_NODES = [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                      ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]


def host_numbers(path):
    """(major, minor) of a host char device node; fails on anything else."""
    st = os.stat(path)
    assert stat.S_ISCHR(st.st_mode), f"{path} is not a char device"
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def scaffold_mount(base, car):
    """TEST HARNESS ONLY. On a machine without the NIC, the port directory the plugin mounts
    over (`/sys/devices/.../infiniband/<ibdev>/ports/<p>`) does not exist in the container's
    sysfs and no runtime can create a mount point inside sysfs. On a real node it exists. So
    give the container an empty directory tree with the same paths, bound read-only over
    `/sys/devices`; the deeper mount then lands on it. Never part of nicplug's output."""
    root = Path(base) / "scaffold-sys-devices"
    for m in car["mounts"]:
        rel = Path(m["container_path"]).relative_to("/sys/devices")
        (root / rel).mkdir(parents=True, exist_ok=True)
    return cri.Mount(container_path="/sys/devices", host_path=str(root), readonly=True,
                     propagation=cri.PROPAGATION_PRIVATE)


def probe_script(car, foreign=()):
    """The busybox script run as the container's command. Prints one finding per line:
    NODE <path> <maj hex> <min hex> <mode> | OPEN <path> <ok|strerror> | MKNOD <path> <result>
    | MOUNT <mountinfo fields 4-6 and fs type> | READ/WRITE <path> <value|strerror> | ENV k=v.
    `foreign`: [(path, major, minor)] made with mknod inside the container, then opened."""
    q = shlex.quote
    lines = [
        'probe() { r=$( (exec 3<"$1") 2>&1 ) && echo "OPEN $1 ok" || echo "OPEN $1 ${r##*: }"; }',
        'for f in /dev/infiniband/*; do [ -e "$f" ] && stat -c "NODE %n %t %T %A" "$f"; done',
        'ls -d /dev/infiniband >/dev/null 2>&1 || echo "NODE none"',
    ]
    for d in car["devices"]:
        lines.append(f"probe {q(d['container_path'])}")
    for path, major, minor in foreign:
        lines.append(f'm=$(mknod {q(path)} c {major} {minor} 2>&1) && echo "MKNOD {path} ok" '
                     f'|| echo "MKNOD {path} ${{m##*: }}"')
        lines.append(f"probe {q(path)}")
    lines.append("awk '$5 ~ \"^/sys\" && $5 !~ \"^/sys/fs/cgroup\" "
                 "{ print \"MOUNT\", $4, $5, $6, $(NF-2) }' /proc/self/mountinfo")
    for m in car["mounts"]:
        p = m["container_path"]
        lines += [
            f'v=$(cat {q(p + "/state")} 2>&1) && echo "READ {p}/state $v" '
            f'|| echo "READ {p}/state ${{v##*: }}"',
            f'v=$(cat {q(p + "/hw_counters/out_of_buffer")} 2>&1) && '
            f'echo "READ {p}/hw_counters/out_of_buffer $v" '
            f'|| echo "READ {p}/hw_counters/out_of_buffer ${{v##*: }}"',
            f'w=$( (echo 0 > {q(p + "/hw_counters/out_of_buffer")}) 2>&1 ) && '
            f'echo "WRITE {p}/hw_counters/out_of_buffer ok" '
            f'|| echo "WRITE {p}/hw_counters/out_of_buffer ${{w##*: }}"',
        ]
    lines.append("env | grep -E '^(PCIDEVICE_|NICPLUG_)' | sort | sed 's/^/ENV /'")
    lines.append("echo DONE")
    return "\n".join(lines)


@dataclass
class PodRun:
    name: str
    car: dict
    log: list = field(default_factory=list)
    exit_code: int = None

    def lines(self, kind):
        return [line[len(kind) + 1:] for line in self.log if line.startswith(kind + " ")]

    def nodes(self):
        """{path: (major, minor)} of what /dev/infiniband holds in the container."""
        out = {}
        for rest in self.lines("NODE"):
            path, maj, mnr, mode = rest.split()
            assert mode.startswith("c"), f"{path} is not a char device: {mode}"
            out[path] = (int(maj, 16), int(mnr, 16))
        return out

    def opens(self):
        return {rest.split(" ", 1)[0]: rest.split(" ", 1)[1] for rest in self.lines("OPEN")}

    def mounts(self):
        """[(root, mount point, options, fs type)] under /sys, cgroups left out."""
        return [tuple(rest.split()) for rest in self.lines("MOUNT")]

    def kv(self, kind):
        return {rest.split(" ", 1)[0]: rest.split(" ", 1)[1] for rest in self.lines(kind)}

    def env(self):
        return dict(rest.split("=", 1) for rest in self.lines("ENV"))


def create_pod(client, base, name, car, script, scaffold=True):
    """RunPodSandbox + CreateContainer with `car` mapped as kubelet maps it (plus, if asked,
    the test-only sysfs scaffold). Returns (container id, log path)."""
    log_dir = Path(base) / "pods" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    devices, mounts, envs, annotations = allocate_to_cri(car)
    if scaffold:
        mounts = [scaffold_mount(log_dir, car), *mounts]
    sid, sandbox_config = client.run_sandbox(name, log_dir)
    cid = client.create_container(sid, sandbox_config, "dpdk", BUSYBOX_IMAGE,
                                  ["sh", "-c", script], devices=devices, mounts=mounts,
                                  envs=envs, annotations=annotations, log_path="dpdk.log")
    return cid, log_dir / "dpdk.log"


def run_pods(client, base, pods):
    """`pods`: [(name, car, script)]. All sandboxes and containers exist at once; returns one
    PodRun per pod after every container has exited."""
    made = [(name, car, *create_pod(client, base, name, car, script))
            for name, car, script in pods]
    for _, _, cid, _ in made:
        client.start(cid)
    runs = []
    for name, car, cid, log in made:
        st = client.wait_exited(cid)
        runs.append(PodRun(name, car, read_cri_log(log), st.exit_code))
    return runs


# --------------------------------------------------------------------------- the pod's view


def pod_view_argv(nodes, mounts, sysfs, argv):
    """`unshare -m` running `argv` where /dev is a fresh tmpfs holding runc's default nodes and
    exactly `nodes` ({container path: (major, minor)}), and each of `mounts` (the plugin's
    read-only binds) is reproduced read-only at its place in the fixture sysfs (`sysfs` stands
    for the container's /sys: libibverbs and EAL are pointed at it by SYSFS_PATH and
    SYSFS_PCI_DEVICES). Needs root."""
    q = shlex.quote
    script = ["set -e", "mount -t tmpfs -o mode=755 nicplug-e2e-dev /dev"]
    for path, major, minor in RUNC_DEFAULT_NODES:
        script.append(f"mknod -m 666 {path} c {major} {minor}")
    for path, (major, minor) in sorted(nodes.items()):
        script.append(f"mkdir -p {q(str(Path(path).parent))}")
        script.append(f"mknod -m 666 {q(path)} c {major} {minor}")
    for m in mounts:
        target = Path(sysfs) / Path(m["container_path"]).relative_to("/sys")
        script.append(f"mount --bind {q(m['host_path'])} {q(str(target))}")
        script.append(f"mount -o remount,bind,ro {q(str(target))}")
    script.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            "\n".join(script), "pod-view", *argv]


def pod_view_env(sysfs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NICPLUG_", "SYSFS_"))}
    env["SYSFS_PATH"] = str(sysfs)
    env["SYSFS_PCI_DEVICES"] = str(Path(sysfs) / "bus" / "pci" / "devices")
    return env
