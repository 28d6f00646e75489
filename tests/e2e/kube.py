"""Kubelet's part for a DaemonSet pod, for the end-to-end suite: a pod template read from the
manifest under test turned into the CRI calls kubelet (1.30) makes for it, on a simulated node.

The node's filesystem root is a directory (`SimNode.root`): every host path kubelet uses (hostPath
volumes, configMap volume directories, the device plugin's device and mount host paths) is
resolved under it, which is the one thing this rig does differently from a real node. The
sample node (`nicplug sample write`) is that root's sys/ and dev/.

Every key of the pod template is either mapped here as kubelet maps it or refused: a manifest
setting the rig does not model fails the test instead of being silently ignored. Left out on
purpose (nothing in nicplug reads them): the /etc/hosts and /dev/termination-log files kubelet
adds, the service-account token volume (the nicplug DaemonSet disables it; the operator's
DaemonSet would get one), scheduling fields (nodeSelector, tolerations, priority class), which
only decide whether the pod lands on this node.
"""

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from cri import cri

# Kubelet's defaults for an unprivileged container with the Default proc mount
# (k8s.io/kubernetes pkg/securitycontext: DefaultMaskedPaths / DefaultReadonlyPaths).
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

POD_KEYS = {"hostNetwork", "automountServiceAccountToken", "priorityClassName", "nodeSelector",
            "tolerations", "serviceAccountName", "containers", "volumes", "imagePullSecrets",
            "securityContext"}
CONTAINER_KEYS = {"name", "image", "imagePullPolicy", "command", "args", "env", "securityContext",
                  "resources", "volumeMounts", "livenessProbe", "readinessProbe"}
SECURITY_KEYS = {"privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem",
                 "capabilities", "runAsUser", "seccompProfile"}
MOUNT_KEYS = {"name", "mountPath", "readOnly"}
FIELD_REFS = {"spec.nodeName", "metadata.name", "metadata.namespace"}


def refuse_unknown(obj, known, where):
    unknown = set(obj) - known
    assert not unknown, f"{where}: the rig does not model {sorted(unknown)}"


def quantity(text):
    """A Kubernetes quantity as a number: `64Mi` -> 67108864, `10m` -> 0.01, `2` -> 2."""
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(text))
    assert m, f"quantity {text!r}"
    scale = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    return float(m.group(1)) * scale


def expand(text, env):
    """Kubelet's `$(VAR)` expansion in command and args (`$$` is a literal `$`; an undefined
    variable stays as written)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  text)


class SimNode:
    """A node whose filesystem root is a directory: the sample node's sys/ and dev/ under it,
    kubelet's directory at var/lib/kubelet. Paths stay short: socket paths must fit 108 bytes."""

    def __init__(self, run_nicplug, name="node-a"):
        self.name = name
        self.base = Path(tempfile.mkdtemp(prefix="ds"))
        self.root = self.base / "r"
        run_nicplug("sample", "write", self.root, timeout=600)
        self.sys = self.root / "sys"
        self.kubelet_dir = self.host("/var/lib/kubelet")
        self.kubelet_dir.mkdir(parents=True)
        self.pods_dir = self.base / "pods"

    def host(self, path):
        """Where the node's absolute `path` is on this machine."""
        return self.root / Path(path).relative_to("/")

    def resolve_allocation(self, car):
        """A device plugin's answer with its host paths resolved on this node, as the node's
        runtime would resolve them (container paths unchanged)."""
        out = dict(car)
        out["devices"] = [dict(d, host_path=str(self.host(d["host_path"])))
                          for d in car["devices"]]
        out["mounts"] = [dict(m, host_path=str(self.host(m["host_path"])))
                         for m in car["mounts"]]
        return out

    def destroy(self):
        shutil.rmtree(self.base, ignore_errors=True)


def configmap_dir(target, data, items=None):
    """A configMap volume as kubelet's atomic writer lays it out: the files in a timestamped
    directory, `..data` pointing at it, one `<key>` link per file through `..data`."""
    target.mkdir(parents=True)
    stamp = target / time.strftime("..%Y_%m_%d_%H_%M_%S.000000001")
    stamp.mkdir()
    files = {i["path"]: data[i["key"]] for i in items} if items else dict(data)
    for path, text in files.items():
        (stamp / path).write_text(text)
        os.chmod(stamp / path, 0o644)
    (target / "..data").symlink_to(stamp.name)
    for path in files:
        (target / path).symlink_to(f"..data/{path}")
    return target


class DaemonPod:
    """One pod of a DaemonSet on `node`: the template's only container, run through CRI."""

    def __init__(self, client, node, template, image, configmaps, namespace="kube-system",
                 extra_mounts=()):
        """`image`: what the container's `image` resolves to in containerd; `configmaps`:
        {name: data} for configMap volumes; `extra_mounts`: TEST HARNESS ONLY mounts added
        after kubelet's (each caller says why)."""
        self.client = client
        self.node = node
        self.template = template
        self.spec = template["spec"]
        refuse_unknown(self.spec, POD_KEYS, "pod spec")
        (self.container,) = self.spec["containers"]
        refuse_unknown(self.container, CONTAINER_KEYS, "container")
        self.name = f"{template['metadata']['labels'].get('app', 'ds')}-{node.name}"
        self.namespace = namespace
        self.uid = f"uid-{self.name}"
        self.log_dir = node.pods_dir / self.name
        self.log_dir.mkdir(parents=True)
        self.log_path = self.log_dir / "daemon.log"
        self.image = image
        self.configmaps = configmaps
        self.extra_mounts = list(extra_mounts)
        self.cid = None

    # ---- kubelet's mapping

    def sandbox_config(self):
        spec = self.spec
        assert spec.get("hostNetwork") is True, "a pod network needs CNI, which the rig lacks"
        pod_sc = spec.get("securityContext", {})
        refuse_unknown(pod_sc, {"seccompProfile", "runAsUser"}, "pod securityContext")
        sc = cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER,
                                                  ipc=cri.POD),
            privileged=any(c.get("securityContext", {}).get("privileged") is True
                           for c in spec["containers"]),
            seccomp=self.seccomp(pod_sc.get("seccompProfile")))
        if "runAsUser" in pod_sc:
            sc.run_as_user.value = pod_sc["runAsUser"]
        labels = dict(self.template["metadata"].get("labels", {}))
        labels.update({"io.kubernetes.pod.name": self.name,
                       "io.kubernetes.pod.namespace": self.namespace,
                       "io.kubernetes.pod.uid": self.uid})
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=self.name, uid=self.uid,
                                            namespace=self.namespace, attempt=0),
            log_directory=str(self.log_dir), labels=labels,
            linux=cri.LinuxPodSandboxConfig(security_context=sc))

    @staticmethod
    def seccomp(profile):
        """seccompProfile -> CRI SecurityProfile. Without one kubelet asks for Unconfined
        (its --seccomp-default flag is off by default)."""
        kind = (profile or {}).get("type", "Unconfined")
        assert kind in ("RuntimeDefault", "Unconfined"), f"seccompProfile {kind}"
        return cri.SecurityProfile(profile_type=getattr(cri.SecurityProfile, kind))

    def env(self):
        out = {}
        for e in self.container.get("env", []):
            if "value" in e:
                out[e["name"]] = expand(str(e["value"]), out)
                continue
            ref = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert ref in FIELD_REFS, f"env {e['name']}: fieldRef {ref}"
            out[e["name"]] = {"spec.nodeName": self.node.name, "metadata.name": self.name,
                              "metadata.namespace": self.namespace}[ref]
        return out

    def volume_host_path(self, volume):
        """Where a volume is on the node, made as kubelet makes it."""
        if "hostPath" in volume:
            hp = volume["hostPath"]
            path = self.node.host(hp["path"])
            kind = hp.get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True, mode=0o755)
            elif kind == "Directory":
                assert path.is_dir(), f"hostPath {hp['path']} (type Directory) does not exist"
            else:
                assert kind == "", f"hostPath type {kind}"
            return path, False
        if "configMap" in volume:
            cm = volume["configMap"]
            assert cm["name"] in self.configmaps, f"no ConfigMap {cm['name']}"
            where = self.node.base / "volumes" / self.name / volume["name"]
            # Kubelet mounts configMap volumes read-only whatever the volumeMount says.
            return configmap_dir(where, self.configmaps[cm["name"]], cm.get("items")), True
        raise AssertionError(f"volume {volume['name']}: the rig does not model {sorted(volume)}")

    def mounts(self):
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        out = []
        for vm in self.container.get("volumeMounts", []):
            refuse_unknown(vm, MOUNT_KEYS, f"volumeMount {vm.get('name')}")
            host, forced_ro = self.volume_host_path(volumes[vm["name"]])
            out.append(cri.Mount(container_path=vm["mountPath"].rstrip("/") or "/",
                                 host_path=str(host),
                                 readonly=bool(vm.get("readOnly")) or forced_ro,
                                 selinux_relabel=False, propagation=cri.PROPAGATION_PRIVATE))
        return out + self.extra_mounts

    def security_context(self):
        c_sc = self.container.get("securityContext", {})
        refuse_unknown(c_sc, SECURITY_KEYS, "container securityContext")
        pod_sc = self.spec.get("securityContext", {})
        privileged = c_sc.get("privileged") is True
        caps = c_sc.get("capabilities", {})
        sc = cri.LinuxContainerSecurityContext(
            capabilities=cri.Capability(add_capabilities=caps.get("add", []),
                                        drop_capabilities=caps.get("drop", [])),
            privileged=privileged,
            namespace_options=cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER,
                                                  ipc=cri.POD),
            readonly_rootfs=c_sc.get("readOnlyRootFilesystem") is True,
            no_new_privs=c_sc.get("allowPrivilegeEscalation") is False,
            seccomp=self.seccomp(c_sc.get("seccompProfile", pod_sc.get("seccompProfile"))))
        if not privileged:
            sc.masked_paths.extend(MASKED_PATHS)
            sc.readonly_paths.extend(READONLY_PATHS)
        user = c_sc.get("runAsUser", pod_sc.get("runAsUser"))
        if user is not None:
            sc.run_as_user.value = user
        return sc

    def resources(self):
        res = self.container.get("resources", {})
        refuse_unknown(res, {"requests", "limits"}, "resources")
        out = cri.LinuxContainerResources()
        cpu = res.get("requests", {}).get("cpu")
        # cpu.shares: milli-CPUs * 1024 / 1000, at least 2 (kubelet's MilliCPUToShares).
        out.cpu_shares = max(2, int(quantity(cpu) * 1024)) if cpu else 2
        limits = res.get("limits", {})
        if "memory" in limits:
            out.memory_limit_in_bytes = int(quantity(limits["memory"]))
        if "cpu" in limits:
            out.cpu_period = 100000
            out.cpu_quota = int(quantity(limits["cpu"]) * 100000)
        return out

    def container_config(self):
        c = self.container
        env = self.env()
        return cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=c["name"], attempt=0),
            image=cri.ImageSpec(image=self.image),
            command=[expand(a, env) for a in c.get("command", [])],
            args=[expand(a, env) for a in c.get("args", [])],
            envs=[cri.KeyValue(key=k, value=v) for k, v in env.items()],
            mounts=self.mounts(),
            labels={"io.kubernetes.container.name": c["name"],
                    "io.kubernetes.pod.name": self.name},
            log_path=self.log_path.name,
            linux=cri.LinuxContainerConfig(resources=self.resources(),
                                           security_context=self.security_context()))

    # ---- running it

    def start(self):
        sandbox = self.sandbox_config()
        sid = self.client.run_sandbox_config(sandbox)
        self.cid = self.client.create_container_config(sid, sandbox, self.container_config())
        self.client.start(self.cid)
        return self

    def running(self):
        return self.client.status(self.cid).state == cri.CONTAINER_RUNNING

    def logs(self):
        from cri import read_cri_log

        return read_cri_log(self.log_path) if self.log_path.exists() else []

    def describe(self):
        st = self.client.status(self.cid)
        return (f"container state {st.state} exit {st.exit_code} reason {st.reason!r} "
                f"{st.message!r}\nlog:\n" + "\n".join(self.logs()))

    def pid(self):
        """The daemon's PID on this machine (containerd's verbose ContainerStatus)."""
        resp = self.client.rt.ContainerStatus(cri.ContainerStatusRequest(
            container_id=self.cid, verbose=True), timeout=10)
        return json.loads(resp.info["info"])["pid"]

    def process(self):
        """What the kernel says of the running daemon: its /proc status fields and the memory
        limit of its memory cgroup (cgroup v1, or v2 when that is where memory is)."""
        pid = self.pid()
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        status = {k: v.strip() for k, v in status.items()}
        limit = None
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
                limit = int(f.read_text())
            elif controllers == "" and limit is None:
                f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
                if f.exists() and f.read_text().strip() != "max":
                    limit = int(f.read_text())
        status["memory limit"] = limit
        return status

    def run_probe(self, kind):
        """The template's exec probe (`livenessProbe`, `readinessProbe`), run as kubelet runs
        it: (exit code, output)."""
        probe = self.container[kind]
        code, out, err = self.client.exec_sync(self.cid, probe["exec"]["command"],
                                               timeout=probe.get("timeoutSeconds", 1))
        return code, out + err

    def stop(self):
        """StopContainer as kubelet on pod deletion: SIGTERM, then SIGKILL after the grace
        period."""
        self.client.rt.StopContainer(cri.StopContainerRequest(container_id=self.cid,
                                                              timeout=10), timeout=30)
