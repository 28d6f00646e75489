"""The DaemonSet, run for real: a manifest's pod template (read from the YAML, so the manifest is
what is tested) run with nicplug's image through containerd's CRI as kubelet runs it
(tests/e2e/kube.py: security context, host network, memory limit, host mounts, configMap
volume, liveness probe), on a simulated node whose root is a directory holding the sample
node. The daemon inside registers with the grpcio kubelet stand-in; then a DPDK pod gets its
allocation in a second container and is checked from inside as tests/e2e/test_pods.py does.

Two manifests, same image:
- deploy/daemonset.yaml: unprivileged, every capability dropped, read-only root, seccomp
  RuntimeDefault, /sys mounted read-only from the node, 64 MiB memory limit.
- the sriov-network-operator's rendered DaemonSet (tests/e2e/manifests/): privileged, the SR-IOV
  plugin's arguments, no /sys mount, only the image changed.

The image is the one the test command builds (scripts/image.sh -> target/image/*.oci.tar, or
$NICPLUG_IMAGE_ARCHIVE), imported into the suite's containerd under the name the manifest gives.
"""

import errno
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from conftest import UNALLOCATED, report
from cri import CriClient, cri
from harness import REPO, require, run_nicplug
from kube import DaemonPod, SimNode, quantity
from kubelet import Kubelet
from pods import probe_script, run_pods

VERSION = re.search(r'^version = "(.*)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
DEPLOY = REPO / "deploy"
OPERATOR_DS = (Path(__file__).resolve().parent / "manifests"
               / "sriov-network-operator-device-plugin.yaml")
VF = "0000:3b:00.2"  # mlx5_2, uverbs2
NO_DRIVER = {os.strerror(errno.ENXIO), os.strerror(errno.ENODEV)}
EPERM = os.strerror(errno.EPERM)
EROFS = os.strerror(errno.EROFS)


def normalized(ref):
    """The name containerd (like kubelet's image service) gives a short image reference."""
    name = ref if "/" in ref else f"library/{ref}"
    first = name.split("/", 1)[0]
    if "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return name


@pytest.fixture(scope="module")
def image(containerd):
    """nicplug's image in the suite's containerd, under the name deploy/daemonset.yaml uses."""
    archive = Path(os.environ.get("NICPLUG_IMAGE_ARCHIVE",
                                  REPO / "target" / "image" / f"nicplug-{VERSION}.oci.tar"))
    if not archive.exists():
        require(f"no image archive at {archive}: scripts/image.sh builds it (scripts/test.sh "
                "runs it before this suite)")
    ds = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"nicplug:{VERSION}", "deploy/ names another release's image"
    containerd.ctr("image", "import", str(archive))
    name = normalized(c["image"])
    containerd.ctr("image", "tag", "--force", f"localhost/nicplug:{VERSION}", name)
    return name


def start_daemon(containerd, node, template, image, configmaps, extra_mounts=()):
    client = CriClient(containerd.socket)
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    pod = DaemonPod(client, node, template, image, configmaps, extra_mounts=extra_mounts)
    return client, kubelet, pod


def wait_registered(kubelet, pod, resource, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pod.running():
            pytest.fail(f"the daemon's container is not running:\n{pod.describe()}")
        try:
            return kubelet.wait_registered(resource, timeout=1)
        except TimeoutError:
            pass
    pytest.fail(f"{resource} not registered within {timeout}s:\n{pod.describe()}")


def check_dpdk_pod(node, run, bdf, env_name):
    """The DPDK pod's own view, as test_pods.py checks it: exactly the allocated nodes with
    sysfs's numbers, the device cgroup allowing them and nothing else, the counters mount
    read-only with the node's values, the env the plugin set."""
    assert run.exit_code == 0 and run.log and run.log[-1] == "DONE", run.log
    vf_dir = node.sys / "bus" / "pci" / "devices" / bdf
    n = re.search(r"\d+$", next((vf_dir / "infiniband").iterdir()).name).group(0)

    def sysfs_dev(path):
        major, minor = (path / "dev").read_text().strip().split(":")
        return int(major), int(minor)

    sysfs = {
        f"uverbs{n}": vf_dir / "infiniband_verbs" / f"uverbs{n}",
        f"umad{n}": vf_dir / "infiniband_mad" / f"umad{n}",
        f"issm{n}": vf_dir / "infiniband_mad" / f"issm{n}",
        "rdma_cm": node.sys / "class" / "misc" / "rdma_cm",
    }
    # Which nodes a pool gives is its config's choice (deploy/configmap.yaml: uverbs and
    # rdma_cm); each one given has sysfs's numbers, and nothing else is in /dev/infiniband.
    given = [os.path.basename(d["container_path"]) for d in run.car["devices"]]
    assert {f"uverbs{n}", "rdma_cm"} <= set(given) <= set(sysfs), given
    expected = {f"/dev/infiniband/{name}": sysfs_dev(sysfs[name]) for name in given}
    assert run.nodes() == expected
    opens, mknods = run.opens(), run.kv("MKNOD")
    for d in run.car["devices"]:
        assert opens[d["container_path"]] in NO_DRIVER, (d, opens)
    assert mknods[UNALLOCATED[0]] == "ok" and opens[UNALLOCATED[0]] == EPERM, (mknods, opens)
    (m,) = run.car["mounts"]
    port = m["container_path"]
    host_port = node.host(port)
    reads, writes = run.kv("READ"), run.kv("WRITE")
    assert reads[f"{port}/state"] == (host_port / "state").read_text().strip()
    assert reads[f"{port}/hw_counters/out_of_buffer"] == (
        host_port / "hw_counters" / "out_of_buffer").read_text().strip()
    assert writes[f"{port}/hw_counters/out_of_buffer"] == EROFS
    mounts = {mp: opts for _, mp, opts, _ in run.mounts()}
    assert "ro" in mounts[port].split(",")
    env = run.env()
    assert env[env_name] == bdf and env == run.car["envs"], env
    report(f"{run.name}: the DPDK pod's view",
           [f"{p} {ma}:{mi}" for p, (ma, mi) in sorted(run.nodes().items())]
           + [f"read {k}: {v}" for k, v in sorted(reads.items())]
           + [f"{k}={v}" for k, v in sorted(env.items())])


def check_process(container, proc):
    """The running daemon has exactly what its manifest asked for, as the kernel reports it."""
    sc = container.get("securityContext", {})
    assert proc["Uid"].split()[0] == str(sc.get("runAsUser", 0))
    if sc.get("privileged"):
        assert int(proc["CapEff"], 16) != 0, proc["CapEff"]
        return
    drop, add = sc.get("capabilities", {}).get("drop", []), sc.get("capabilities", {}).get("add")
    if drop == ["ALL"] and not add:
        assert int(proc["CapEff"], 16) == 0 and int(proc["CapBnd"], 16) == 0, proc
    if sc.get("allowPrivilegeEscalation") is False:
        assert proc["NoNewPrivs"] == "1", proc
    if sc.get("seccompProfile", {}).get("type") == "RuntimeDefault":
        assert proc["Seccomp"] == "2", proc  # SECCOMP_MODE_FILTER
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        assert proc["memory limit"] == int(quantity(memory)), proc


def run_daemonset_and_a_dpdk_pod(containerd, template, image, configmaps, resource, env_name,
                                 extra_mounts=lambda node: ()):
    node = SimNode(run_nicplug)
    client, kubelet, pod = start_daemon(containerd, node, template, image, configmaps,
                                        extra_mounts(node))
    try:
        t = time.monotonic()
        pod.start()
        reg = wait_registered(kubelet, pod, resource)
        took = time.monotonic() - t
        ids = sorted(d.id for d in kubelet.devices(resource))
        lines = [f"registered {resource} {took:.2f}s after RunPodSandbox, endpoint "
                 f"{reg.request.endpoint}, {len(ids)} devices"]
        for kind in ("livenessProbe", "readinessProbe"):
            if kind in pod.container:
                code, out = pod.run_probe(kind)
                lines.append(f"{kind} {pod.container[kind]['exec']['command']}: "
                             f"exit {code} {out.strip()}")
                assert code == 0, out
        proc = pod.process()
        lines.append("daemon process: " + ", ".join(
            f"{k} {proc[k]}" for k in ("Uid", "CapEff", "NoNewPrivs", "Seccomp", "VmHWM",
                                       "memory limit")))
        report(f"DaemonSet pod {pod.name} ({image})",
               lines + [f"log: {line}" for line in pod.logs()[-5:]])
        check_process(pod.container, proc)
        assert VF in ids, ids
        (car,) = kubelet.allocate(resource, [[VF]])
        # Kubelet on this node resolves the plugin's host paths on the node (under its root).
        resolved = node.resolve_allocation(car)
        (run,) = run_pods(client, node.base, [
            ("dpdk", resolved, probe_script(resolved, [UNALLOCATED]))])
        check_dpdk_pod(node, run, VF, env_name)
        # The CNI's device-info file, written by the daemon through its hostPath mount.
        devinfo = node.host("/var/run/k8s.cni.cncf.io/devinfo/dp")
        files = [p.name for p in devinfo.iterdir()] if devinfo.is_dir() else []
        written = [f for f in files if VF in f]
        assert written, f"no device-info file for {VF} in {files}"
        assert json.loads((devinfo / written[0]).read_text())["pci"]["pci-address"] == VF
        assert pod.running(), pod.describe()
        return node, pod
    finally:
        try:
            if pod.cid:
                pod.stop()
        finally:
            errors = client.cleanup()
            client.close()
            kubelet.stop()
            node.destroy()
            assert not errors, f"cleanup: {errors}"


def test_deploy_daemonset_serves_a_dpdk_pod(containerd, image):
    ds = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
    cm = yaml.safe_load((DEPLOY / "configmap.yaml").read_text())
    run_daemonset_and_a_dpdk_pod(
        containerd, ds["spec"]["template"], image, {cm["metadata"]["name"]: cm["data"]},
        "nvidia.com/cx6dx_vf", "PCIDEVICE_NVIDIA_COM_CX6DX_VF")


# The config the operator writes for this node (one key per node name), in its own format
# (capitalised IsRdma/NeedVhostNet, SelectorObj): its policy selects the ConnectX VFs of both
# PFs, with no resourcePrefix (the DaemonSet's --resource-prefix applies).
OPERATOR_CONFIG = json.dumps({"resourceList": [{
    "resourceName": "cx6dx_vf",
    "selectors": {"vendors": ["15b3"], "devices": ["101e"],
                  "pfNames": ["ens1f0#0-7", "ens1f1#0-7"],
                  "rootDevices": ["0000:3b:00.0", "0000:3b:00.1"],
                  "IsRdma": True, "NeedVhostNet": False},
    "SelectorObj": None}]}, separators=(",", ":"))


def node_sysfs_at_sys(node):
    """TEST HARNESS ONLY. The operator's DaemonSet mounts no /sys: privileged, the daemon reads
    the container's own /sys, which on a real node is the node's sysfs. This node's sysfs is a
    directory (the sample node), so the rig does what the runtime does on a real node: the
    node's sysfs at /sys, read-write as a privileged container's sysfs is. Nothing else is
    added; the template's own mounts are untouched."""
    return [cri.Mount(container_path="/sys", host_path=str(node.sys), readonly=False,
                      selinux_relabel=False, propagation=cri.PROPAGATION_PRIVATE)]


def test_sriov_network_operator_daemonset_serves_a_dpdk_pod(containerd, image):
    ds = yaml.safe_load(OPERATOR_DS.read_text())
    template = ds["spec"]["template"]
    (c,) = template["spec"]["containers"]
    c["image"] = image  # the operator's SRIOV_DEVICE_PLUGIN_IMAGE; nothing else changes
    run_daemonset_and_a_dpdk_pod(
        containerd, template, image, {"device-plugin-config": {"node-a": OPERATOR_CONFIG}},
        "openshift.io/cx6dx_vf", "PCIDEVICE_OPENSHIFT_IO_CX6DX_VF",
        extra_mounts=node_sysfs_at_sys)
