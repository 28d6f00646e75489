"""The CRI side of the end-to-end suite: stubs for `cri_subset.proto` (generated at test time
into `target/py-stubs/`, never committed), a small RuntimeService client, and the mapping of a
device plugin's ContainerAllocateResponse to a CRI ContainerConfig exactly as kubelet makes it.
"""

import time
from pathlib import Path

import grpc

from harness import compile_stubs  # tests/serve, on sys.path through conftest.py

PROTO = Path(__file__).resolve().parent / "cri_subset.proto"


def load_cri_stubs():
    """The CRI subset stubs, generated like the device plugin API's (tests/serve/harness.py)."""
    return compile_stubs(PROTO, "cri")


cri, cri_grpc = load_cri_stubs()


# --------------------------------------------------------------------------- kubelet's mapping


def allocate_to_cri(car):
    """What kubelet puts into ContainerConfig for one ContainerAllocateResponse (given as the
    dict `kubelet.car_to_dict` makes): devices, mounts, envs, annotations. Kubelet
    (pkg/kubelet/cm/devicemanager -> kuberuntime) copies each field one to one; mounts are
    never SELinux-relabelled and use private propagation."""
    devices = [cri.Device(container_path=d["container_path"], host_path=d["host_path"],
                          permissions=d["permissions"]) for d in car["devices"]]
    mounts = [cri.Mount(container_path=m["container_path"], host_path=m["host_path"],
                        readonly=m["read_only"], selinux_relabel=False,
                        propagation=cri.PROPAGATION_PRIVATE) for m in car["mounts"]]
    envs = [cri.KeyValue(key=k, value=v) for k, v in sorted(car["envs"].items())]
    return devices, mounts, envs, dict(car["annotations"])


# --------------------------------------------------------------------------- the client


class CriClient:
    """RuntimeService over containerd's socket; remembers every sandbox and container it made
    so that `cleanup()` removes them all."""

    def __init__(self, socket):
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.rt = cri_grpc.RuntimeServiceStub(self.channel)
        self.img = cri_grpc.ImageServiceStub(self.channel)
        self.sandboxes = []
        self.containers = []

    def version(self):
        return self.rt.Version(cri.VersionRequest(version="v1"), timeout=10)

    def image_present(self, ref):
        resp = self.img.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref)),
                                    timeout=10)
        return resp.HasField("image")

    def run_sandbox(self, name, log_dir):
        """A pod in the NODE network namespace (no CNI), no hostname (kubelet sets none for
        host-network pods here), its own PID namespace per container, as kubelet does."""
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="e2e",
                                            attempt=0),
            log_directory=str(log_dir),
            labels={"io.kubernetes.pod.name": name},
            linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER,
                                                      ipc=cri.POD))),
        )
        sid = self.rt.RunPodSandbox(cri.RunPodSandboxRequest(config=config),
                                    timeout=60).pod_sandbox_id
        self.sandboxes.append(sid)
        return sid, config

    def create_container(self, sid, sandbox_config, name, image, command, devices=(),
                         mounts=(), envs=(), annotations=None, log_path="c.log"):
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name, attempt=0),
            image=cri.ImageSpec(image=image),
            command=list(command),
            envs=list(envs), mounts=list(mounts), devices=list(devices),
            annotations=annotations or {},
            log_path=log_path,
            linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                privileged=False,
                namespace_options=cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER,
                                                      ipc=cri.POD))),
        )
        cid = self.rt.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sandbox_config),
            timeout=60).container_id
        self.containers.append(cid)
        return cid

    def run_sandbox_config(self, config):
        """RunPodSandbox with a config made by the caller (tests/e2e/kube.py)."""
        sid = self.rt.RunPodSandbox(cri.RunPodSandboxRequest(config=config),
                                    timeout=60).pod_sandbox_id
        self.sandboxes.append(sid)
        return sid

    def create_container_config(self, sid, sandbox_config, config):
        """CreateContainer with a config made by the caller (tests/e2e/kube.py)."""
        cid = self.rt.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sandbox_config),
            timeout=60).container_id
        self.containers.append(cid)
        return cid

    def exec_sync(self, cid, cmd, timeout=10):
        """ExecSync, as kubelet runs an exec probe: (exit code, stdout, stderr)."""
        resp = self.rt.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                    timeout=timeout), timeout=timeout + 10)
        return resp.exit_code, resp.stdout.decode(errors="replace"), resp.stderr.decode(
            errors="replace")

    def start(self, cid):
        self.rt.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=60)

    def status(self, cid):
        return self.rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid),
                                       timeout=10).status

    def wait_exited(self, cid, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(cid)
            if st.state == cri.CONTAINER_EXITED:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {cid} still {st.state} after {timeout}s")
            time.sleep(0.05)

    def cleanup(self):
        """Stop and remove every container, then every sandbox. Returns the errors seen."""
        errors = []
        for cid in reversed(self.containers):
            for call, req in ((self.rt.StopContainer,
                               cri.StopContainerRequest(container_id=cid, timeout=0)),
                              (self.rt.RemoveContainer,
                               cri.RemoveContainerRequest(container_id=cid))):
                try:
                    call(req, timeout=30)
                except grpc.RpcError as e:
                    errors.append(f"{call._method}: {cid}: {e.code()} {e.details()}")
        for sid in reversed(self.sandboxes):
            for call, req in ((self.rt.StopPodSandbox,
                               cri.StopPodSandboxRequest(pod_sandbox_id=sid)),
                              (self.rt.RemovePodSandbox,
                               cri.RemovePodSandboxRequest(pod_sandbox_id=sid))):
                try:
                    call(req, timeout=30)
                except grpc.RpcError as e:
                    errors.append(f"{call._method}: {sid}: {e.code()} {e.details()}")
        self.containers.clear()
        self.sandboxes.clear()
        return errors

    def close(self):
        self.channel.close()


def read_cri_log(path):
    """The text of a CRI log file (`<time> <stream> <P|F> <text>` lines), stdout and stderr
    interleaved as written."""
    out = []
    partial = ""
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else ""
        if parts[2] == "P":
            partial += text
        else:
            out.append(partial + text)
            partial = ""
    return out
